//! cgroups (v1 hybrid and v2, cgroupfs driver): pod and container cgroups, their stats.
