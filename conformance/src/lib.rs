//! The integration-test harness: crustd, a real registry and test images built from busybox-static.
