//! The harness itself: a stack dropped (as a failing test's unwinding drops it) has stopped its
//! services when the drop returns, so none outlives a test process that ends right after.
#![allow(clippy::unwrap_used)]

use tests::{Stack, StackOptions, lock};

/// Whether process `pid` exists (signal 0 checks without sending anything).
fn alive(pid: u32) -> bool {
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stack_has_stopped_its_services_when_the_drop_returns() {
    let stack = Stack::start(StackOptions::historical(runtime::testing::kafka()))
        .await
        .unwrap();
    let pids: Vec<u32> = [&stack.ingest, &stack.processor, &stack.publisher]
        .into_iter()
        .map(|s| lock(s).pid().unwrap())
        .collect();
    assert!(pids.iter().all(|p| alive(*p)));
    drop(stack);
    let left: Vec<u32> = pids.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "still running after the drop: {left:?}");
}
