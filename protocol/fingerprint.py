"""What runs, as one short hash both sides compute the same way: convergence's yardstick.

The agent reports the fingerprint of the spec it last applied; the controller compares
it with the fingerprint of the revision the service should run. The image counts by its
name and tag, and its digest apart (a spec may name a tag and each host pin the digest
it pulled); health checks do not count, since they verify a container but do not change
it, so a change of probe timing alone restarts nothing; nor do lifecycle hooks, nor how
many old images are kept.
"""

from __future__ import annotations

import hashlib
import json

from protocol.app import AppSpec
from protocol.spec import ServiceSpec

FINGERPRINT_LENGTH = 16


def image_digest(image: str) -> str | None:
    """The digest an image reference pins (``repo:tag@sha256:...``), if it pins one."""
    return image.split("@", 1)[1] if "@" in image else None


def settings_fingerprint(spec: ServiceSpec) -> str:
    """A hash of what shapes the container: not the image digest, health, hooks or the
    image retention."""
    # Defaults left out: a field a newer version adds (with its default) does not make
    # every host of an older agent, or an older controller, look different.
    what_runs = spec.model_dump(
        mode="json", exclude={"health", "hooks", "images"}, exclude_defaults=True
    )
    what_runs["image"] = spec.image.split("@", 1)[0]
    text = json.dumps(what_runs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_LENGTH]


def app_fingerprint(app: AppSpec) -> str:
    """What shapes an app: each member's settings fingerprint and what it waits for, and
    the app's volumes and networks (not the members' digests, nor their health checks)."""
    what_runs = {
        "members": {
            member.name: {
                "settings": settings_fingerprint(member.spec),
                "depends_on": [d.model_dump(mode="json") for d in member.depends_on],
            }
            for member in app.members
        },
        "volumes": [v.model_dump(mode="json", exclude_defaults=True) for v in app.volumes],
        "networks": [n.model_dump(mode="json", exclude_defaults=True) for n in app.networks],
    }
    text = json.dumps(what_runs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_LENGTH]


def app_digest(app: AppSpec) -> str | None:
    """One digest for the images of every member, if every member's image is pinned."""
    digests = {member.name: image_digest(member.spec.image) for member in app.members}
    if any(digest is None for digest in digests.values()):
        return None
    text = json.dumps(digests, sort_keys=True, separators=(",", ":"))
    return "app:" + hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_LENGTH]
