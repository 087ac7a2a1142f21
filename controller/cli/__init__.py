"""fleetctl: the typer app (app.py) and one module per verb group (config.py; bus.py for
hosts, pki and keys), rendering (render.py, render_hosts.py, tables.py), exit codes and
the shared plumbing of every verb (base.py)."""
