//! The code that runs in the child between `fork` and `exec`.
//!
//! The parent (possibly multi-threaded) prepares everything here: every path
//! as a `CString`, the seccomp program, the uid maps. After `fork` only raw
//! system calls run, with no allocation and no locks, because another
//! thread of the parent may have held the allocator's lock at the fork.
//!
//! Three processes take part:
//! - the *outer* child (std's child): new session, joins the cgroup, creates
//!   the namespaces, forks the init and waits for it;
//! - the *init*, PID 1 of the new PID namespace: builds the filesystem view,
//!   forks the command, reaps every orphan, and when the command exits
//!   reports its status and exits, which makes the kernel kill whatever is
//!   left in the namespace (daemons, double forks);
//! - the *command*: limits, Landlock, capabilities dropped, seccomp, exec.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use crate::seccomp::Filter;

/// A record written to the report pipe.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Report {
    pub kind: u32,
    pub step: u32,
    pub value: i32,
}

pub(crate) const REPORT_SETUP_FAILED: u32 = 1;
pub(crate) const REPORT_EXIT_STATUS: u32 = 2;

/// Steps of the setup, for error messages. Mount operations are numbered
/// from `STEP_MOUNT_OPS` by their index in the plan.
pub(crate) mod step {
    pub const SETSID: u32 = 1;
    pub const CGROUP: u32 = 2;
    pub const UNSHARE: u32 = 3;
    pub const ID_MAPS: u32 = 4;
    pub const FORK_INIT: u32 = 5;
    pub const HOSTNAME: u32 = 6;
    pub const PRIVATE_MOUNTS: u32 = 7;
    pub const ROOT_TMPFS: u32 = 8;
    pub const PIVOT_ROOT: u32 = 9;
    pub const READ_ONLY_ROOT: u32 = 10;
    pub const PROC_SYS: u32 = 11;
    pub const CHDIR: u32 = 12;
    pub const FORK_COMMAND: u32 = 13;
    pub const RLIMIT: u32 = 14;
    pub const NO_NEW_PRIVS: u32 = 15;
    pub const LANDLOCK: u32 = 16;
    pub const CAPABILITIES: u32 = 17;
    pub const SECCOMP: u32 = 18;
    pub const NETWORK: u32 = 19;
    pub const MOUNT_OPS: u32 = 100;

    pub fn describe(step: u32) -> &'static str {
        match step {
            SETSID => "starting a new session",
            CGROUP => "joining the sandbox cgroup",
            UNSHARE => "creating namespaces",
            ID_MAPS => "writing user id maps",
            FORK_INIT => "starting the sandbox init",
            HOSTNAME => "setting the hostname",
            PRIVATE_MOUNTS => "making mounts private",
            ROOT_TMPFS => "mounting the new root",
            PIVOT_ROOT => "switching to the new root",
            READ_ONLY_ROOT => "making the root read-only",
            PROC_SYS => "making /proc/sys read-only",
            CHDIR => "entering the working directory",
            FORK_COMMAND => "starting the command",
            RLIMIT => "setting resource limits",
            NO_NEW_PRIVS => "setting no_new_privs",
            LANDLOCK => "applying Landlock rules",
            CAPABILITIES => "dropping capabilities",
            SECCOMP => "installing the seccomp filter",
            NETWORK => "setting up the proxy relay",
            _ => "building the filesystem view",
        }
    }
}

/// One step of building the filesystem view, in the init, before pivot_root.
#[derive(Debug)]
pub(crate) enum MountOp {
    Mkdir(CString),
    /// An empty file to bind a file onto.
    Touch(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    Bind {
        source: CString,
        target: CString,
    },
    Tmpfs {
        target: CString,
        options: CString,
    },
    Proc {
        target: CString,
    },
    /// Set mount attributes (read-only, nosuid, nodev) on a mount and, when
    /// `recursive`, on every mount below it.
    Restrict {
        target: CString,
        attributes: u64,
        recursive: bool,
    },
}

impl MountOp {
    pub(crate) fn describe(&self) -> String {
        let text = |path: &CString| path.to_string_lossy().into_owned();
        match self {
            MountOp::Mkdir(path) => format!("mkdir {}", text(path)),
            MountOp::Touch(path) => format!("create {}", text(path)),
            MountOp::Symlink { target, link } => format!("symlink {} -> {}", text(link), text(target)),
            MountOp::Bind { source, target } => format!("bind {} on {}", text(source), text(target)),
            MountOp::Tmpfs { target, .. } => format!("tmpfs on {}", text(target)),
            MountOp::Proc { target } => format!("proc on {}", text(target)),
            MountOp::Restrict { target, .. } => format!("restrict {}", text(target)),
        }
    }
}

pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Landlock rules, applied by the command after the view is in place.
#[derive(Debug)]
pub(crate) struct LandlockPlan {
    pub handled_fs: u64,
    pub handled_net: u64,
    pub scoped: u64,
    pub rules: Vec<(CString, u64)>,
    /// TCP ports that may be connected to.
    pub connect_ports: Vec<u64>,
    /// `landlock_restrict_self` flags: which denials the kernel logs.
    pub restrict_flags: u32,
    /// The name the command takes when it restricts itself, for the audit
    /// log to tell its denials apart (see `audit`).
    pub process_name: Option<crate::audit::ProcessName>,
}

#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

const LANDLOCK_RULE_NET_PORT: libc::c_int = 2;
pub(crate) const LANDLOCK_ACCESS_NET_CONNECT_TCP: u64 = 1 << 1;

#[repr(C)]
pub(crate) struct RulesetAttr {
    pub(crate) handled_access_fs: u64,
    pub(crate) handled_access_net: u64,
    pub(crate) scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;

/// Everything the child needs, prepared by the parent.
#[derive(Debug)]
pub(crate) struct ChildPlan {
    pub parent_pid: libc::pid_t,
    pub report_fd: RawFd,
    pub cgroup_procs: Vec<CString>,
    pub unshare_flags: libc::c_int,
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    pub hostname: &'static CStr,
    pub new_root: CString,
    pub mount_ops: Vec<MountOp>,
    pub cwd: CString,
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    pub landlock: Option<LandlockPlan>,
    pub seccomp: Option<Filter>,
    /// Whether the init relays 127.0.0.1:3128 to the egress proxy.
    pub egress: bool,
    /// Where the command sends the seccomp notification descriptor, if
    /// denied calls are to be reported.
    pub monitor_socket: Option<RawFd>,
}

/// Runs in std's child after `fork`; returns only in the command process,
/// which std then `exec`s.
///
/// # Safety
///
/// Must only be called between `fork` and `exec` (from `pre_exec`).
pub(crate) unsafe fn enter(plan: &ChildPlan) -> std::io::Result<()> {
    // SAFETY: the whole body is raw syscalls on memory prepared before the
    // fork; nothing allocates or takes a lock.
    unsafe {
        let fd = plan.report_fd;
        check(fd, step::SETSID, libc::setsid())?;
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != plan.parent_pid {
            // The parent died before the death signal was armed.
            libc::_exit(1);
        }
        for procs in &plan.cgroup_procs {
            write_file(fd, step::CGROUP, procs, b"0")?;
        }
        check(fd, step::UNSHARE, libc::unshare(plan.unshare_flags))?;
        write_file(fd, step::ID_MAPS, c"/proc/self/setgroups", b"deny")?;
        write_file(fd, step::ID_MAPS, c"/proc/self/uid_map", &plan.uid_map)?;
        write_file(fd, step::ID_MAPS, c"/proc/self/gid_map", &plan.gid_map)?;

        let init = check(fd, step::FORK_INIT, raw_fork())?;
        if init > 0 {
            // The outer child only waits: the init reports the real status.
            close_all_except(fd);
            let status = wait_for(init);
            libc::_exit(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 1 });
        }

        // The init: PID 1 of the new namespace.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        check(fd, step::HOSTNAME, libc::sethostname(plan.hostname.as_ptr(), plan.hostname.to_bytes().len()))?;
        check(
            fd,
            step::PRIVATE_MOUNTS,
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
        )?;
        check(
            fd,
            step::ROOT_TMPFS,
            libc::mount(
                c"tmpfs".as_ptr(),
                plan.new_root.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=0755,size=4m".as_ptr().cast(),
            ),
        )?;
        for (index, op) in plan.mount_ops.iter().enumerate() {
            let step = step::MOUNT_OPS + index as u32;
            apply(fd, step, op)?;
        }
        check(fd, step::PIVOT_ROOT, libc::chdir(plan.new_root.as_ptr()))?;
        // pivot_root(".", ".") stacks the old root on the new one; detaching
        // it leaves only the new view.
        check(fd, step::PIVOT_ROOT, libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int)?;
        check(fd, step::PIVOT_ROOT, libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
        check(fd, step::PIVOT_ROOT, libc::chdir(c"/".as_ptr()))?;
        set_attributes(
            fd,
            step::READ_ONLY_ROOT,
            c"/",
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            false,
        )?;
        // Sysctls are written through /proc/sys; keep them out of reach.
        check(
            fd,
            step::PROC_SYS,
            libc::mount(
                c"/proc/sys".as_ptr(),
                c"/proc/sys".as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ),
        )?;
        set_attributes(
            fd,
            step::PROC_SYS,
            c"/proc/sys",
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            true,
        )?;
        check(fd, step::CHDIR, libc::chdir(plan.cwd.as_ptr()))?;

        // With an allow-listed network, the init also relays the proxy port;
        // SIGCHLD then arrives through a signalfd in its poll loop.
        let mut relay = None;
        if plan.egress {
            let listener = match crate::relay::listen() {
                Ok(listener) => listener,
                Err(()) => return fail(fd, step::NETWORK),
            };
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            libc::sigaddset(&mut mask, libc::SIGCHLD);
            check(fd, step::NETWORK, libc::sigprocmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut()))?;
            let signals = check(fd, step::NETWORK, libc::signalfd(-1, &mask, libc::SFD_CLOEXEC))?;
            relay = Some((listener, signals, mask));
        }

        let command = check(fd, step::FORK_COMMAND, raw_fork())?;
        if command > 0 {
            match relay {
                Some((listener, signals, _)) => {
                    close_all_except_sorted(&sorted3(fd, listener, signals));
                    crate::relay::serve_until(command, fd, listener, signals);
                }
                None => {
                    close_all_except(fd);
                    reap_until(command, fd);
                }
            }
        }

        // The command.
        if let Some((_, _, mask)) = &relay {
            libc::sigprocmask(libc::SIG_UNBLOCK, mask, std::ptr::null_mut());
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        for (resource, soft, hard) in &plan.rlimits {
            let limit = libc::rlimit { rlim_cur: *soft, rlim_max: *hard };
            check(fd, step::RLIMIT, libc::setrlimit(*resource, &limit))?;
        }
        check(fd, step::NO_NEW_PRIVS, libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        if let Some(landlock) = &plan.landlock {
            apply_landlock(fd, landlock)?;
        }
        drop_capabilities(fd)?;
        // Whatever descriptors the platform had open without close-on-exec
        // when it forked must not reach the command: only stdio does.
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        check(
            fd,
            step::CAPABILITIES,
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) as libc::c_int,
        )?;
        if let Some(filter) = &plan.seccomp {
            let program = filter.as_fprog();
            let flags = if plan.monitor_socket.is_some() { libc::SECCOMP_FILTER_FLAG_NEW_LISTENER } else { 0 };
            let res = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &program as *const libc::sock_fprog,
            );
            let listener = check(fd, step::SECCOMP, res as libc::c_int)?;
            if let Some(socket) = plan.monitor_socket {
                let sent = crate::monitor::send_fd(socket, listener);
                libc::close(listener);
                libc::close(socket);
                if !sent {
                    return fail(fd, step::SECCOMP);
                }
            }
        }
        Ok(())
    }
}

/// The init's life after starting the command: reap everything; when the
/// command exits, report its status and exit, taking the namespace with it.
unsafe fn reap_until(command: libc::pid_t, fd: RawFd) -> ! {
    // SAFETY: raw syscalls only.
    unsafe {
        loop {
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, 0);
            if pid == command {
                report(fd, REPORT_EXIT_STATUS, 0, status);
                libc::_exit(0);
            }
            if pid < 0 && errno() != libc::EINTR {
                libc::_exit(1);
            }
        }
    }
}

unsafe fn wait_for(pid: libc::pid_t) -> libc::c_int {
    let mut status = 0;
    // SAFETY: raw syscall on a local.
    unsafe {
        while libc::waitpid(pid, &mut status, 0) < 0 {
            if errno() != libc::EINTR {
                return 1 << 8;
            }
        }
    }
    status
}

unsafe fn apply(fd: RawFd, step: u32, op: &MountOp) -> std::io::Result<()> {
    // SAFETY: raw syscalls with pointers to CStrings prepared by the parent.
    unsafe {
        match op {
            MountOp::Mkdir(path) => {
                if libc::mkdir(path.as_ptr(), 0o755) < 0 && errno() != libc::EEXIST {
                    return fail(fd, step);
                }
            }
            MountOp::Touch(path) => {
                let file = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CREAT | libc::O_CLOEXEC, 0o644);
                if file < 0 && errno() != libc::EEXIST {
                    return fail(fd, step);
                }
                libc::close(file);
            }
            MountOp::Symlink { target, link } => {
                if libc::symlink(target.as_ptr(), link.as_ptr()) < 0 && errno() != libc::EEXIST {
                    return fail(fd, step);
                }
            }
            MountOp::Bind { source, target } => {
                let flags = libc::MS_BIND | libc::MS_REC;
                check(
                    fd,
                    step,
                    libc::mount(source.as_ptr(), target.as_ptr(), std::ptr::null(), flags, std::ptr::null()),
                )?;
            }
            MountOp::Tmpfs { target, options } => {
                let flags = libc::MS_NOSUID | libc::MS_NODEV;
                let res =
                    libc::mount(c"tmpfs".as_ptr(), target.as_ptr(), c"tmpfs".as_ptr(), flags, options.as_ptr().cast());
                check(fd, step, res)?;
            }
            MountOp::Proc { target } => {
                let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                let res = libc::mount(c"proc".as_ptr(), target.as_ptr(), c"proc".as_ptr(), flags, std::ptr::null());
                check(fd, step, res)?;
            }
            MountOp::Restrict { target, attributes, recursive } => {
                set_attributes(fd, step, target, *attributes, *recursive)?;
            }
        }
        Ok(())
    }
}

unsafe fn set_attributes(fd: RawFd, step: u32, target: &CStr, attributes: u64, recursive: bool) -> std::io::Result<()> {
    let attr = MountAttr { attr_set: attributes, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: raw syscall with a pointer to a local struct of the kernel's layout.
    unsafe {
        let res = libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        );
        check(fd, step, res as libc::c_int).map(|_| ())
    }
}

unsafe fn apply_landlock(fd: RawFd, plan: &LandlockPlan) -> std::io::Result<()> {
    // SAFETY: raw syscalls with pointers to locals and prepared CStrings.
    unsafe {
        let attr = RulesetAttr {
            handled_access_fs: plan.handled_fs,
            handled_access_net: plan.handled_net,
            scoped: plan.scoped,
        };
        let ruleset = libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0,
        ) as libc::c_int;
        check(fd, step::LANDLOCK, ruleset)?;
        for (path, access) in &plan.rules {
            let parent = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            check(fd, step::LANDLOCK, parent)?;
            let rule = PathBeneathAttr { allowed_access: *access, parent_fd: parent };
            let res = libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset,
                LANDLOCK_RULE_PATH_BENEATH,
                &rule as *const PathBeneathAttr,
                0,
            );
            libc::close(parent);
            check(fd, step::LANDLOCK, res as libc::c_int)?;
        }
        for port in &plan.connect_ports {
            let rule = NetPortAttr { allowed_access: LANDLOCK_ACCESS_NET_CONNECT_TCP, port: *port };
            let res = libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset,
                LANDLOCK_RULE_NET_PORT,
                &rule as *const NetPortAttr,
                0,
            );
            check(fd, step::LANDLOCK, res as libc::c_int)?;
        }
        if let Some(name) = &plan.process_name {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        }
        let res = libc::syscall(libc::SYS_landlock_restrict_self, ruleset, plan.restrict_flags) as libc::c_int;
        libc::close(ruleset);
        check(fd, step::LANDLOCK, res).map(|_| ())
    }
}

/// Leaves the command with no capability it could ever regain: the
/// bounding set emptied, root given no special treatment by exec, and the
/// current sets cleared.
unsafe fn drop_capabilities(fd: RawFd) -> std::io::Result<()> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    // SAFETY: raw prctl/capset syscalls on locals.
    unsafe {
        for capability in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) < 0 && errno() == libc::EINVAL {
                break;
            }
        }
        let securebits = libc::SECBIT_NOROOT
            | libc::SECBIT_NOROOT_LOCKED
            | libc::SECBIT_NO_SETUID_FIXUP
            | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
            | libc::SECBIT_NO_CAP_AMBIENT_RAISE
            | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
        check(fd, step::CAPABILITIES, libc::prctl(libc::PR_SET_SECUREBITS, securebits as libc::c_ulong, 0, 0, 0))?;
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0);
        let header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
        let data = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
        let res = libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr());
        check(fd, step::CAPABILITIES, res as libc::c_int).map(|_| ())
    }
}

/// fork(2) as a bare system call: glibc's `fork` would run atfork
/// handlers, which may allocate or lock.
unsafe fn raw_fork() -> libc::c_int {
    // SAFETY: clone with only SIGCHLD and no new stack is fork.
    unsafe {
        libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) as libc::c_int
    }
}

unsafe fn write_file(fd: RawFd, step: u32, path: &CStr, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: raw syscalls on a prepared path and buffer.
    unsafe {
        let file = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(fd, step, file)?;
        let written = libc::write(file, data.as_ptr().cast(), data.len());
        libc::close(file);
        if written < 0 || written as usize != data.len() {
            return fail(fd, step);
        }
        Ok(())
    }
}

unsafe fn close_all_except(keep: RawFd) {
    // SAFETY: forwarded.
    unsafe { close_all_except_sorted(&[keep]) }
}

/// Closes every descriptor but `keep` (ascending, non-negative).
unsafe fn close_all_except_sorted(keep: &[RawFd]) {
    let mut next = 0u32;
    for fd in keep.iter().map(|fd| *fd as u32) {
        if fd > next {
            // SAFETY: close_range on our own descriptor table.
            unsafe { libc::syscall(libc::SYS_close_range, next, fd - 1, 0u32) };
        }
        next = fd + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0u32) };
}

fn sorted3(a: RawFd, b: RawFd, c: RawFd) -> [RawFd; 3] {
    let mut fds = [a, b, c];
    fds.sort_unstable();
    fds
}

/// Passes a successful result through; on failure reports the step and errno.
unsafe fn check(fd: RawFd, step: u32, res: libc::c_int) -> std::io::Result<libc::c_int> {
    if res < 0 {
        // SAFETY: forwarded to `fail`, which only writes and exits.
        return unsafe { fail(fd, step) };
    }
    Ok(res)
}

/// Reports the failed step and exits: nothing of a half-built sandbox may
/// run the command.
unsafe fn fail<T>(fd: RawFd, step: u32) -> std::io::Result<T> {
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        report(fd, REPORT_SETUP_FAILED, step, errno());
        libc::_exit(SETUP_FAILED_EXIT)
    }
}

/// The exit code of a child whose setup failed (the report says why).
pub(crate) const SETUP_FAILED_EXIT: libc::c_int = 125;

pub(crate) unsafe fn report(fd: RawFd, kind: u32, step: u32, value: i32) {
    let record = Report { kind, step, value };
    // SAFETY: writes a local POD struct to a pipe.
    unsafe {
        libc::write(fd, (&record as *const Report).cast(), std::mem::size_of::<Report>());
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
