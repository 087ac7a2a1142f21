# Only capabilities on the controller's allowlist (FLEET_ALLOWED_CAPABILITIES) are added.
package fleet.policy

import rego.v1

deny contains msg if {
	some capability in input.spec.container.cap_add
	not capability in data.fleet.allowed_capabilities
	msg := sprintf(
		"%s adds capability %s, which is not allowed (allowed: %v)",
		[input.spec.name, capability, data.fleet.allowed_capabilities],
	)
}
