# Images come only from allowlisted registries (FLEET_ALLOWED_REGISTRIES), when one is set.
package fleet.policy

import rego.v1

deny contains msg if {
	count(data.fleet.allowed_registries) > 0
	not input.image.registry in data.fleet.allowed_registries
	msg := sprintf(
		"%s: image %s comes from registry %s, which is not allowed (allowed: %v)",
		[input.spec.name, input.image.reference, input.image.registry, data.fleet.allowed_registries],
	)
}
