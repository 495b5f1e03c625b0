//! CNI: load network configurations, invoke plugins, parse results.
