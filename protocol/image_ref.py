"""Parsing of container image references, following the grammar of distribution/reference.

    reference := name [":" tag] ["@" digest]
    name      := [domain "/"] path

A reference that does not match raises InvalidImageReference with the reason, so an
operator learns that ``Demo/Web:1.0`` is wrong before any host is touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol.errors import InvalidImageReference

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]{{1,5}})?"
)
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_NAME_MAX = 255
DEFAULT_REGISTRY = "docker.io"


@dataclass(frozen=True, slots=True)
class ImageReference:
    registry: str | None
    """None when the reference names no registry (Docker Hub, implicitly)."""
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    @property
    def registry_or_default(self) -> str:
        return self.registry or DEFAULT_REGISTRY

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def local(self) -> str:
        """How the engine knows the image once pulled: by digest when pinned (a pull by
        digest tags nothing), else by name and tag."""
        return f"{self.name}@{self.digest}" if self.digest else str(self)

    def pinned(self, digest: str) -> ImageReference:
        """The same image addressed by ``digest`` (the tag is kept for humans)."""
        if _DIGEST_RE.fullmatch(digest) is None:
            raise InvalidImageReference(f"{digest!r} is not a sha256 digest")
        return ImageReference(self.registry, self.repository, self.tag, digest)


def parse_image_reference(text: str) -> ImageReference:
    if not isinstance(text, str) or not text:
        raise InvalidImageReference("an image reference must be a non-empty string")
    if any(c.isspace() for c in text):
        raise InvalidImageReference(f"{text!r}: an image reference contains no white space")
    rest, _, digest = text.partition("@")
    if digest and _DIGEST_RE.fullmatch(digest) is None:
        raise InvalidImageReference(f"{text!r}: digest must be sha256: and 64 lowercase hex digits")
    name, tag = _split_tag(rest)
    if tag is not None and _TAG_RE.fullmatch(tag) is None:
        raise InvalidImageReference(f"{text!r}: tag {tag!r} is not valid")
    if len(name) > _NAME_MAX:
        raise InvalidImageReference(f"{text!r}: name is longer than {_NAME_MAX} characters")
    registry, path = _split_registry(name)
    if registry is not None and _DOMAIN_RE.fullmatch(registry) is None:
        raise InvalidImageReference(f"{text!r}: registry {registry!r} is not a valid host[:port]")
    components = path.split("/")
    for component in components:
        if _PATH_COMPONENT_RE.fullmatch(component) is None:
            raise InvalidImageReference(
                f"{text!r}: repository component {component!r} must be lowercase letters, "
                "digits and single separators"
            )
    return ImageReference(registry, path, tag, digest or None)


def _split_tag(name_and_tag: str) -> tuple[str, str | None]:
    # A colon after the last slash starts a tag; one before it belongs to a registry port.
    last_slash = name_and_tag.rfind("/")
    colon = name_and_tag.rfind(":")
    if colon > last_slash:
        return name_and_tag[:colon], name_and_tag[colon + 1 :]
    return name_and_tag, None


def _split_registry(name: str) -> tuple[str | None, str]:
    first, sep, rest = name.partition("/")
    looks_like_domain = (
        "." in first or ":" in first or first == "localhost" or first != first.lower()
    )
    if sep and looks_like_domain:
        return first, rest
    return None, name


def registry_refusal(ref: ImageReference, allowed: tuple[str, ...]) -> str | None:
    """Why ``ref`` may not be used under the registry allowlist ``allowed``, or None.

    An empty allowlist allows every registry. Entries are host[:port] as written in image
    references; an image without a registry comes from Docker Hub (docker.io)."""
    if not allowed or ref.registry_or_default in allowed:
        return None
    return (
        f"{ref} comes from registry {ref.registry_or_default}, which is not allowed "
        f"(allowed: {', '.join(allowed)})"
    )
