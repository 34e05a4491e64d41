//! Backend conformance suite and test backends (feature `testkit`).
