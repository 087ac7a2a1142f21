# A privileged container is root on the host.
package fleet.policy

import rego.v1

deny contains msg if {
	input.spec.container.privileged == true
	msg := sprintf("%s is privileged: remove container.privileged", [input.spec.name])
}
