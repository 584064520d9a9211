//! The seccomp filter every sandboxed command runs under: a BPF program,
//! built once in the parent, installed by the child just before `exec`.
//!
//! It denies (EPERM) the syscalls a tool never needs and an attacker wants:
//! mounting, tracing other processes, loading kernel code, keyrings, new
//! namespaces, io_uring (which bypasses syscall filtering), and more. `clone`
//! with namespace flags is denied; `clone3` answers ENOSYS so the C library
//! falls back to `clone`, whose flags the filter can read. Sockets are limited
//! to Unix and IP families; terminal injection (`TIOCSTI`) is refused.

use libc::{sock_filter, sock_fprog};

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the seccomp filter knows x86_64 and aarch64 only");

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
fn arg_low(index: u32) -> u32 {
    // Little-endian: the low 32 bits of argument i come first.
    16 + 8 * index
}

/// Syscalls denied outright, with their names for reports.
pub const DENIED: &[(&str, libc::c_long)] = &[
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("fsopen", libc::SYS_fsopen),
    ("fsmount", libc::SYS_fsmount),
    ("fsconfig", libc::SYS_fsconfig),
    ("fspick", libc::SYS_fspick),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("syslog", libc::SYS_syslog),
    ("vhangup", libc::SYS_vhangup),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
];

const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u32;

/// A jump target while the program is assembled; each is marked once,
/// after every jump to it (BPF jumps only forward).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Label {
    Body,
    CloneCheck,
    SocketCheck,
    SocketAllow,
    IoctlCheck,
    Deny,
    NotImplemented,
}

enum Insn {
    Load(u32),
    /// if A == k goto label
    JumpIfEqual(u32, Label),
    /// if A & k != 0 goto label
    JumpIfSet(u32, Label),
    Return(u32),
    Mark(Label),
}

/// The filter as BPF instructions, ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
pub struct Filter {
    program: Vec<sock_filter>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Filter({} instructions)", self.program.len())
    }
}

impl Filter {
    /// With `notify`, denied calls wait for the supervisor, which records
    /// them and answers the error (see `monitor.rs`); without, the kernel
    /// answers EPERM itself.
    pub fn build(notify: bool) -> Self {
        use Insn::*;
        let errno = |code: i32| libc::SECCOMP_RET_ERRNO | (code as u32 & libc::SECCOMP_RET_DATA);
        let allow = libc::SECCOMP_RET_ALLOW;
        let deny = if notify { libc::SECCOMP_RET_USER_NOTIF } else { errno(libc::EPERM) };
        let mut insns = vec![
            Load(ARCH),
            JumpIfEqual(AUDIT_ARCH, Label::Body),
            // A foreign architecture's syscall numbers would slip past the
            // checks below: such a process is killed.
            Return(libc::SECCOMP_RET_KILL_PROCESS),
            Mark(Label::Body),
            Load(NR),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            // The x32 ABI sets this bit on syscall numbers; we allow none of it.
            insns.push(JumpIfSet(0x4000_0000, Label::Deny));
        }
        for (_, nr) in DENIED {
            insns.push(JumpIfEqual(*nr as u32, Label::Deny));
        }
        insns.extend([
            JumpIfEqual(libc::SYS_clone as u32, Label::CloneCheck),
            JumpIfEqual(libc::SYS_socket as u32, Label::SocketCheck),
            JumpIfEqual(libc::SYS_ioctl as u32, Label::IoctlCheck),
            // clone3 passes its flags in memory, out of a filter's reach:
            // "not implemented" makes the C library fall back to clone.
            JumpIfEqual(libc::SYS_clone3 as u32, Label::NotImplemented),
            Return(allow),
            Mark(Label::CloneCheck),
            Load(arg_low(0)),
            JumpIfSet(NAMESPACE_FLAGS, Label::Deny),
            Return(allow),
            Mark(Label::SocketCheck),
            Load(arg_low(0)),
            JumpIfEqual(libc::AF_UNIX as u32, Label::SocketAllow),
            JumpIfEqual(libc::AF_INET as u32, Label::SocketAllow),
            JumpIfEqual(libc::AF_INET6 as u32, Label::SocketAllow),
            Return(if notify { deny } else { errno(libc::EAFNOSUPPORT) }),
            Mark(Label::SocketAllow),
            Return(allow),
            Mark(Label::IoctlCheck),
            Load(arg_low(1)),
            JumpIfEqual(libc::TIOCSTI as u32, Label::Deny),
            JumpIfEqual(libc::TIOCLINUX as u32, Label::Deny),
            Return(allow),
            Mark(Label::Deny),
            Return(deny),
            Mark(Label::NotImplemented),
            Return(errno(libc::ENOSYS)),
        ]);
        Self { program: assemble(&insns) }
    }

    /// The `sock_fprog` pointing into this filter; valid while `self` lives.
    pub fn as_fprog(&self) -> sock_fprog {
        sock_fprog { len: self.program.len() as u16, filter: self.program.as_ptr().cast_mut() }
    }
}

/// Turns labels into BPF's relative forward offsets.
fn assemble(insns: &[Insn]) -> Vec<sock_filter> {
    let mut marks = Vec::new();
    let mut pc = 0usize;
    for insn in insns {
        match insn {
            Insn::Mark(label) => marks.push((*label, pc)),
            _ => pc += 1,
        }
    }
    let offset = |from: usize, label: Label| -> u8 {
        let to = marks.iter().find(|(mark, _)| *mark == label).map_or(from + 1, |(_, at)| *at);
        // The program is a few dozen instructions: offsets always fit.
        u8::try_from(to.saturating_sub(from + 1)).unwrap_or(u8::MAX)
    };
    let mut program = Vec::with_capacity(pc);
    for insn in insns {
        let from = program.len();
        program.push(match insn {
            Insn::Mark(_) => continue,
            Insn::Load(at) => bpf_stmt((libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, *at),
            Insn::Return(value) => bpf_stmt((libc::BPF_RET | libc::BPF_K) as u16, *value),
            Insn::JumpIfEqual(k, label) => {
                bpf_jump((libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16, *k, offset(from, *label))
            }
            Insn::JumpIfSet(k, label) => {
                bpf_jump((libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16, *k, offset(from, *label))
            }
        });
    }
    program
}

fn bpf_stmt(code: u16, k: u32) -> sock_filter {
    sock_filter { code, jt: 0, jf: 0, k }
}

fn bpf_jump(code: u16, k: u32, jt: u8) -> sock_filter {
    sock_filter { code, jt, jf: 0, k }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program() {
        let filter = Filter::build(false);
        let len = filter.program.len();
        assert!(len > DENIED.len() + 10 && len < 256);
        for (pc, insn) in filter.program.iter().enumerate() {
            if insn.code & 0x07 == libc::BPF_JMP as u16 {
                let to = pc + 1 + usize::from(insn.jt);
                assert!(to < len, "jump at {pc} leaves the program");
                assert!(to > pc + 1 || insn.jt == 0);
            }
        }
        let last = filter.program.last().unwrap();
        assert_eq!(last.k, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
    }
}
