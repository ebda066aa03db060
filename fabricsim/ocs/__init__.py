"""OCS control plane: circuit allocation and regional controllers."""

from fabricsim.ocs.allocate import allocate_circuits, completion_bound

__all__ = ["allocate_circuits", "completion_bound"]
