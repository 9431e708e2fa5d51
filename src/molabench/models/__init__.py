"""Networks: backbones by name, task heads, MoLA adapters and routers."""
