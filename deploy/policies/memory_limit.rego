# Every service has a memory limit, so one leak cannot starve its host.
package fleet.policy

import rego.v1

deny contains msg if {
	not is_number(input.spec.container.resources.memory_bytes)
	msg := sprintf("%s has no memory limit: set container.resources.memory_bytes", [input.spec.name])
}
