# A service must not run as root: the spec's container.user, else the image's USER.
package fleet.policy

import rego.v1

spec_user := input.spec.container.user if is_string(input.spec.container.user)

run_as := spec_user

run_as := object.get(input.image.config, "User", "") if not spec_user

user_part := split(run_as, ":")[0]

shown := run_as if run_as != ""

shown := "unset" if run_as == ""

deny contains msg if {
	user_part in {"", "0", "root"}
	msg := sprintf(
		"%s runs as root (user %s): set container.user, or USER in the image, to a non-root user",
		[input.spec.name, shown],
	)
}
