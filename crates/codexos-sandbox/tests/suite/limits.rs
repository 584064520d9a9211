//! Each limit, hit on purpose: reported with its kind, nothing left running.

use std::time::Duration;

use codexos_sandbox::ViolationKind;

use super::{policy, python, sh, stdout, workspace};

#[test]
fn a_fork_bomb_hits_the_process_limit() {
    let ws = workspace();
    let mut policy = policy(ws.path());
    policy.limits.pids = Some(32);
    policy.limits.timeout = Duration::from_secs(5);
    let outcome = sh(&policy, "bomb() { bomb | bomb & }; bomb; sleep 1; echo survived");
    assert!(outcome.has_violation(ViolationKind::PidsLimit), "{:?}", outcome.violations);
}

#[test]
fn memory_past_the_limit_is_killed() {
    let ws = workspace();
    let mut policy = policy(ws.path());
    policy.limits.memory_bytes = Some(64 << 20);
    let outcome = python(&policy, "x = bytearray(256 * 1024 * 1024); print('ALLOCATED')");
    assert!(!stdout(&outcome).contains("ALLOCATED"));
    assert!(outcome.has_violation(ViolationKind::MemoryLimit), "{:?}", outcome.violations);
    assert_ne!(outcome.shell_status(), 0);
}

#[test]
fn spinning_past_the_cpu_limit_is_killed() {
    let ws = workspace();
    let mut policy = policy(ws.path());
    policy.limits.cpu_seconds = Some(1);
    let outcome = sh(&policy, "while :; do :; done");
    assert!(outcome.has_violation(ViolationKind::CpuLimit), "{outcome:?}");
    assert!(outcome.usage.cpu_time >= Duration::from_millis(900), "{:?}", outcome.usage);
    assert!(outcome.usage.wall_time < Duration::from_secs(10));
}

#[test]
fn sleeping_past_the_timeout_is_killed() {
    let ws = workspace();
    let mut policy = policy(ws.path());
    policy.limits.timeout = Duration::from_millis(500);
    let outcome = sh(&policy, "sleep 30");
    assert!(outcome.has_violation(ViolationKind::Timeout), "{:?}", outcome.violations);
    assert_eq!(outcome.signal, Some(libc::SIGKILL));
    assert!(outcome.usage.wall_time < Duration::from_secs(5), "{:?}", outcome.usage);
}

#[test]
fn gigabytes_of_output_are_capped_and_counted() {
    let ws = workspace();
    let mut policy = policy(ws.path());
    policy.output_limit_bytes = 4096;
    let outcome = sh(&policy, "head -c 1073741824 /dev/zero; echo tail >&2");
    assert_eq!(outcome.exit_code, Some(0));
    assert!(outcome.stdout.truncated);
    assert_eq!(outcome.stdout.bytes.len(), 4096);
    assert_eq!(outcome.stdout.total_bytes, 1 << 30);
    assert_eq!(outcome.stderr.bytes, b"tail\n");
    assert!(outcome.has_violation(ViolationKind::OutputLimit));
}

#[test]
fn big_files_hit_the_file_size_limit() {
    let ws = workspace();
    let mut policy = policy(ws.path());
    policy.limits.file_size_bytes = Some(1 << 20);
    let outcome = sh(&policy, "head -c 4194304 /dev/zero > big");
    assert!(outcome.has_violation(ViolationKind::FileSizeLimit), "{:?} {:?}", outcome.signal, outcome.violations);
    assert_eq!(std::fs::metadata(ws.path().join("big")).unwrap().len(), 1 << 20);
}

#[test]
fn usage_is_measured() {
    let ws = workspace();
    let outcome = python(&policy(ws.path()), "x = bytearray(50 * 1024 * 1024)\nfor i in range(3000000): pass");
    assert_eq!(outcome.exit_code, Some(0));
    assert!(outcome.usage.peak_memory_bytes >= 50 << 20, "{:?}", outcome.usage);
    assert!(outcome.usage.cpu_time > Duration::from_millis(20), "{:?}", outcome.usage);
    assert!(outcome.usage.wall_time >= outcome.usage.cpu_time / 2);
    assert!(outcome.violations.is_empty());
}
