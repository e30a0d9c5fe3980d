//! Helpers shared by the end-to-end tests: starting services, polling with deadlines.
