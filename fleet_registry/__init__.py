"""The registry HTTP API (distribution v2), spoken by both sides.

The controller resolves a tag to the digest it pins and reads the image's config for
the policies; the agent checks that its host can pull what it was sent. The two may not
import each other and ``protocol`` does no I/O, so the client lives here, on its own.
"""
