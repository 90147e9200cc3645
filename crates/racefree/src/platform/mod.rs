//! Platform-specific process plumbing for the CLI. Linux gets the parent-death signal; other
//! Unix systems fall back to what POSIX offers.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::kill_child_when_parent_dies;

/// Without `PR_SET_PDEATHSIG` a child cannot be tied to its parent's death; a SIGKILLed
/// racefree then leaves its child running (documented in docs/lock.md).
#[cfg(not(target_os = "linux"))]
pub fn kill_child_when_parent_dies(_cmd: &mut std::process::Command) -> bool {
    false
}
