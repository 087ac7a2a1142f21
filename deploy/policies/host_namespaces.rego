# No sharing of the host's process or IPC namespace.
package fleet.policy

import rego.v1

deny contains msg if {
	input.spec.container.host_pid == true
	msg := sprintf("%s shares the host's PID namespace (container.host_pid)", [input.spec.name])
}

deny contains msg if {
	input.spec.container.host_ipc == true
	msg := sprintf("%s shares the host's IPC namespace (container.host_ipc)", [input.spec.name])
}
