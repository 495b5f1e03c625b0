//! The per-container monitor: the process (`crust-monitor`) that is a container's parent, and crustd's side of it.
