"""Rolling updates: the inventory applied to one batch of Sparks at a time. `plan`
decides, before any host changes, what differs and in which batch each host goes;
`apply` carries it out, host by host (see its docstring for the steps)."""

from .apply import for_host, plan_once

__all__ = ["for_host", "plan_once"]
