"""The registry HTTP API (distribution v2), spoken by both sides.

The controller resolves a tag to the digest it pins and reads the image's config for
the policies; the agent checks that its host can pull what it was sent. The two may not
import each other and ``protocol`` does no I/O, so the client lives here, on its own.
"""

import sys

# httpx's __init__ imports its command-line tool whenever click, rich and pygments are
# installed, as they are here for fleetctl: about 5 MB of the agent's 50 MB budget for a
# program nothing here runs. A None in sys.modules makes that one optional import fail
# (the documented meaning of None there), and httpx then leaves its CLI out. It is done
# here, before any module of this package imports httpx; if something else imported
# httpx first, there is nothing left to save and nothing is changed.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
