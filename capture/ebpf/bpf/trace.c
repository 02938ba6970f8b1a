// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// criseq's tracer: copies the bytes that traced processes write to and read
// from chosen file descriptors into a ring buffer, from syscall tracepoints
// only (no kprobes, no fentry). It knows nothing of HTTP/2.
//
// Two attachments run the same handlers: the perf syscall tracepoints
// syscalls/sys_{enter,exit}_NAME (a program per syscall; used where they
// work), and the raw tracepoints sys_enter and sys_exit (one program each,
// run by every syscall; x86-64 and arm64 only). User space chooses.
//
// Which (tgid, fd) pairs are traced is the user space's choice (map conns),
// except at connect(2): an AF_UNIX connect by a traced process (map procs) is
// marked here at once, so the bytes written right after it are not lost, and
// user space drops it if it is not the runtime's socket.
//
// Every byte transferred on a traced fd moves the direction's offset (kept
// here), whether or not it reached the ring: user space sees any loss as a
// jump in offsets, and the drop counters say why.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define CHUNK 32768 // payload bytes per ring record
#define AF_UNIX 1
#define EINPROGRESS 115
#define MAX_LOOPS (1 << 20)

enum kind { EV_DATA = 0, EV_CONNECT = 1, EV_CLOSE = 2, EV_EXEC = 3 };
enum dir { DIR_OUT = 0, DIR_IN = 1 }; // written by the traced process, read by it
enum sys { S_WRITE, S_READ, S_WRITEV, S_READV, S_SENDMSG, S_RECVMSG, S_SENDTO, S_RECVFROM };

// event heads every ring record; DATA records carry len payload bytes after it.
struct event {
	__u64 ts;     // bpf_ktime_get_ns at syscall exit
	__u64 cookie; // connection, from conns
	__u64 offset; // position of the payload in the direction's stream
	__u32 len;
	__u32 tgid;
	__u32 fd;
	__u8 kind;
	__u8 dir;
	__u8 last; // last record of one syscall
	__u8 sys;  // DATA: which syscall (enum sys)
	__u64 aux[3]; // CONNECT: socket inode, peer's bound dev, ino; CLOSE: final offsets
};

struct conn {
	__u64 cookie;
	__u64 off[2];
};

struct conn_key {
	__u32 tgid;
	__u32 fd;
};

// io is a syscall in flight, from enter to exit.
struct io {
	__u64 ptr;    // buffer, or iovec array
	__u64 cnt;    // iovec count (vec)
	__u32 fd;
	__u8 vec;
	__u8 dir;
	__u8 sys;
};

struct scratch {
	struct event hdr;
	__u8 data[2 * CHUNK]; // twice: lets the verifier see every copy in bounds
};

// Drop counters, per CPU.
enum counter {
	C_DROP_EVENTS = 0, // ring full: records lost
	C_DROP_BYTES,      // ring full: payload bytes lost
	C_FAULT_BYTES,     // user memory unreadable: payload bytes lost
	C_CTRL_LOST,       // ring full: connect/close/exec records lost
	C_NO_SCRATCH,
	C_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct conn_key);
	__type(value, struct conn);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u8);
} procs SEC(".maps");

// Syscalls in flight, by thread. LRU: a thread killed inside a syscall never
// reaches its exit, and its entry must not stay for good.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct io);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u32);
} connecting SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); // set by user space
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); // set to the number of CPUs by user space
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

// Set by user space before loading.
volatile const char follow_comm[16] = {}; // exec of this name is traced ("" : none)
__u64 next_cookie = 1ULL << 62;                // cookies of connections marked here

// Syscall tracepoint records (see /sys/kernel/tracing/events/syscalls/*/format).
struct sys_enter {
	__u64 common;
	long id;
	unsigned long args[6];
};

struct sys_exit {
	__u64 common;
	long id;
	long ret;
};

// wakeup lets records wait in the ring until user space's next poll (every
// few milliseconds), unless the ring is filling: a wakeup per record would
// cost the traced process a context switch of criseq's per syscall.
static __always_inline __u64 wakeup(void)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	return avail > size / 8 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline void count(__u32 c, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &c);
	if (v)
		__sync_fetch_and_add(v, n);
}

// traced says whether fd of the current process is traced.
static __always_inline int traced(__u32 fd)
{
	struct conn_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = fd};
	return bpf_map_lookup_elem(&conns, &k) != NULL;
}

// enter keeps a syscall on a traced fd for its exit.
static __always_inline void enter(__u32 fd, __u64 ptr, __u64 cnt, __u8 vec, __u8 dir, __u8 sys)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct io io = {.ptr = ptr, .cnt = cnt, .fd = fd, .vec = vec, .dir = dir, .sys = sys};
	bpf_map_update_elem(&inflight, &id, &io, BPF_ANY);
}

struct copy {
	struct scratch *s;
	__u64 base;   // current buffer (or iovec) address
	__u64 left;   // bytes left in it
	__u64 iov;    // next iovec
	__u64 iovend; // end of the iovec array
	__u64 rem;    // bytes of the syscall not yet handled
	__u64 pos;    // bytes handled so far
	__u64 start;  // stream offset of the syscall's first byte
	__u32 fill;   // payload bytes in s->data
	__u8 vec;
};

static __always_inline void flush(struct copy *c)
{
	__u32 n = c->fill;
	if (n == 0)
		return;
	if (n > CHUNK)
		n = CHUNK;
	struct scratch *s = c->s;
	s->hdr.len = n;
	s->hdr.offset = c->start + c->pos - n;
	s->hdr.last = c->rem == 0;
	if (bpf_ringbuf_output(&events, s, sizeof(struct event) + n, wakeup()) < 0) {
		count(C_DROP_EVENTS, 1);
		count(C_DROP_BYTES, n);
	}
	c->fill = 0;
}

static long copy_step(__u32 i, struct copy *c)
{
	if (c->rem == 0)
		return 1;
	if (c->left == 0) {
		if (!c->vec || c->iov >= c->iovend)
			return 1;
		struct {
			__u64 base;
			__u64 len;
		} v;
		if (bpf_probe_read_user(&v, sizeof(v), (void *)c->iov) < 0)
			return 1;
		c->iov += sizeof(v);
		c->base = v.base;
		c->left = v.len;
		return 0;
	}
	__u64 n = c->left;
	if (n > c->rem)
		n = c->rem;
	__u32 fill = c->fill;
	if (fill >= CHUNK)
		return 1; // not reached: flushed when full
	if (n > CHUNK - fill)
		n = CHUNK - fill;
	if (n > CHUNK)
		n = CHUNK;
	if (n == 0)
		return 1;
	if (bpf_probe_read_user(&c->s->data[fill & (CHUNK - 1)], n, (void *)c->base) < 0) {
		// Bytes we cannot read: send what we have; the offsets show the hole.
		flush(c);
		count(C_FAULT_BYTES, n);
		c->base += n;
		c->left -= n;
		c->rem -= n;
		c->pos += n;
		return 0;
	}
	c->fill = fill + n;
	c->base += n;
	c->left -= n;
	c->rem -= n;
	c->pos += n;
	if (c->fill >= CHUNK || c->rem == 0)
		flush(c);
	return 0;
}

static __always_inline void leave(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct io *io = bpf_map_lookup_elem(&inflight, &id);
	if (!io)
		return;
	struct io cur = *io;
	bpf_map_delete_elem(&inflight, &id);
	if (ret <= 0)
		return;
	struct conn_key k = {.tgid = id >> 32, .fd = cur.fd};
	struct conn *cn = bpf_map_lookup_elem(&conns, &k);
	if (!cn)
		return;
	__u8 dir = cur.dir & 1;
	__u64 start = __sync_fetch_and_add(&cn->off[dir], ret);

	__u32 cpu = bpf_get_smp_processor_id();
	struct scratch *s = bpf_map_lookup_elem(&scratch, &cpu);
	if (!s) {
		count(C_NO_SCRATCH, 1);
		count(C_DROP_BYTES, ret);
		return;
	}
	s->hdr.ts = bpf_ktime_get_ns();
	s->hdr.cookie = cn->cookie;
	s->hdr.tgid = k.tgid;
	s->hdr.fd = k.fd;
	s->hdr.kind = EV_DATA;
	s->hdr.dir = dir;
	s->hdr.sys = cur.sys;
	s->hdr.aux[0] = s->hdr.aux[1] = s->hdr.aux[2] = 0;

	struct copy c = {.s = s, .rem = ret, .start = start, .vec = cur.vec};
	if (cur.vec) {
		__u64 cnt = cur.cnt;
		if (cnt > 1024)
			cnt = 1024; // UIO_MAXIOV
		c.iov = cur.ptr;
		c.iovend = cur.ptr + cnt * 16;
	} else {
		c.base = cur.ptr;
		c.left = ret;
	}
	bpf_loop(MAX_LOOPS, copy_step, &c, 0);
	if (c.rem > 0) {
		// The iovecs ended early (changed under us) or a fault: the rest is lost.
		flush(&c);
		count(C_FAULT_BYTES, c.rem);
	}
}

// sendmsg, recvmsg: the iovecs are in the msghdr.
struct user_msghdr {
	__u64 name;
	__u64 namelen;
	__u64 iov;
	__u64 iovlen;
};

static __always_inline void enter_msg(__u32 fd, __u64 msg, __u8 dir, __u8 sys)
{
	struct user_msghdr m;
	if (bpf_probe_read_user(&m, sizeof(m), (void *)msg) < 0)
		m.iov = m.iovlen = 0;
	enter(fd, m.iov, m.iovlen, 1, dir, sys);
}

// Kernel types, relocated by name against the running kernel's BTF (CO-RE).
struct super_block { __u32 s_dev; } __attribute__((preserve_access_index));
struct inode { unsigned long i_ino; } __attribute__((preserve_access_index));
struct dentry { struct inode *d_inode; struct super_block *d_sb; } __attribute__((preserve_access_index));
struct path { struct dentry *dentry; } __attribute__((preserve_access_index));
struct sock { int sk_family; } __attribute__((preserve_access_index));
struct unix_sock { struct path path; struct sock *peer; } __attribute__((preserve_access_index));
struct socket { struct sock *sk; } __attribute__((preserve_access_index));
struct file { struct inode *f_inode; void *private_data; } __attribute__((preserve_access_index));
struct fdtable { unsigned int max_fds; struct file **fd; } __attribute__((preserve_access_index));
struct files_struct { struct fdtable *fdt; } __attribute__((preserve_access_index));
struct task_struct { struct files_struct *files; } __attribute__((preserve_access_index));

static __always_inline void connect_in(__u32 fd, __u64 addr)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (!bpf_map_lookup_elem(&procs, &tgid))
		return;
	__u16 family = 0;
	if (bpf_probe_read_user(&family, sizeof(family), (void *)addr) < 0 || family != AF_UNIX)
		return;
	bpf_map_update_elem(&connecting, &id, &fd, BPF_ANY);
}

static __always_inline void connect_out(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 *fdp = bpf_map_lookup_elem(&connecting, &id);
	if (!fdp)
		return;
	__u32 fd = *fdp;
	bpf_map_delete_elem(&connecting, &id);
	if (ret != 0 && ret != -EINPROGRESS)
		return;
	struct conn cn = {.cookie = __sync_fetch_and_add(&next_cookie, 1)};
	struct conn_key k = {.tgid = id >> 32, .fd = fd};
	bpf_map_update_elem(&conns, &k, &cn, BPF_ANY);

	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(C_CTRL_LOST, 1);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_ns();
	e->cookie = cn.cookie;
	e->tgid = k.tgid;
	e->fd = fd;
	e->kind = EV_CONNECT;
	// The socket's inode and the inode of the file its peer is bound to, for
	// user space to check even if the socket is gone by then.
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	if (fd < BPF_CORE_READ(fdt, max_fds))
		bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (f) {
		e->aux[0] = BPF_CORE_READ(f, f_inode, i_ino);
		struct socket *sock = BPF_CORE_READ(f, private_data);
		// sk is a unix_sock's first member.
		struct unix_sock *us = (struct unix_sock *)BPF_CORE_READ(sock, sk);
		struct unix_sock *peer = (struct unix_sock *)BPF_CORE_READ(us, peer);
		if (peer) {
			struct dentry *d = BPF_CORE_READ(peer, path.dentry);
			if (d) {
				e->aux[1] = BPF_CORE_READ(d, d_sb, s_dev);
				e->aux[2] = BPF_CORE_READ(d, d_inode, i_ino);
			}
		}
	}
	bpf_ringbuf_submit(e, wakeup());
}

static __always_inline void close_in(__u32 fd)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = {.tgid = id >> 32, .fd = fd};
	struct conn *cn = bpf_map_lookup_elem(&conns, &k);
	if (!cn)
		return;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		__builtin_memset(e, 0, sizeof(*e));
		e->ts = bpf_ktime_get_ns();
		e->cookie = cn->cookie;
		e->tgid = k.tgid;
		e->fd = k.fd;
		e->kind = EV_CLOSE;
		e->aux[0] = cn->off[0];
		e->aux[1] = cn->off[1];
		bpf_ringbuf_submit(e, wakeup());
	} else {
		count(C_CTRL_LOST, 1);
	}
	bpf_map_delete_elem(&conns, &k);
}

// A new program of the followed name (kubelet restarted): trace it.
static __always_inline void exec(void)
{
	if (follow_comm[0] == 0)
		return;
	char comm[16];
	bpf_get_current_comm(comm, sizeof(comm));
	for (int i = 0; i < 16; i++) {
		if (comm[i] != follow_comm[i])
			return;
		if (comm[i] == 0)
			break;
	}
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u8 one = 1;
	bpf_map_update_elem(&procs, &tgid, &one, BPF_ANY);
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(C_CTRL_LOST, 1);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_ns();
	e->tgid = tgid;
	e->kind = EV_EXEC;
	bpf_ringbuf_submit(e, wakeup());
}

// The data syscalls, and what each one's entry does on a traced fd, given
// its arguments FD, A1, A2; each one's exit is leave(ret).
#define DATA_SYSCALLS(X)                                      \
	X(write, enter(FD, A1, 0, 0, DIR_OUT, S_WRITE))       \
	X(read, enter(FD, A1, 0, 0, DIR_IN, S_READ))          \
	X(sendto, enter(FD, A1, 0, 0, DIR_OUT, S_SENDTO))     \
	X(recvfrom, enter(FD, A1, 0, 0, DIR_IN, S_RECVFROM))  \
	X(writev, enter(FD, A1, A2, 1, DIR_OUT, S_WRITEV))    \
	X(readv, enter(FD, A1, A2, 1, DIR_IN, S_READV))       \
	X(sendmsg, enter_msg(FD, A1, DIR_OUT, S_SENDMSG))     \
	X(recvmsg, enter_msg(FD, A1, DIR_IN, S_RECVMSG))

#if defined(__TARGET_ARCH_x86) || defined(__TARGET_ARCH_arm64)
// Raw tracepoints sys_enter and sys_exit, user space's fallback where the
// perf syscall tracepoints cannot be attached (no tracefs, no syscall events):
// no perf record is built, but every syscall of every process runs both
// programs, so each returns at once unless the syscall is one of ours (its
// number), then unless the fd or the process is traced. Compat (32-bit)
// syscalls have other numbers and are left out, as the perf tracepoints do.
#if defined(__TARGET_ARCH_x86)
enum { NR_read = 0, NR_write = 1, NR_close = 3, NR_readv = 19, NR_writev = 20, NR_connect = 42,
       NR_sendto = 44, NR_recvfrom = 45, NR_sendmsg = 46, NR_recvmsg = 47 };
struct pt_regs { unsigned long di, si, dx, orig_ax; } __attribute__((preserve_access_index));
#define SYS_ARG0(r) BPF_CORE_READ(r, di)
#define SYS_ARG1(r) BPF_CORE_READ(r, si)
#define SYS_ARG2(r) BPF_CORE_READ(r, dx)
#define SYS_NR(r) BPF_CORE_READ(r, orig_ax)
struct thread_info { __u32 status; } __attribute__((preserve_access_index));
struct task_struct___ti { struct thread_info thread_info; } __attribute__((preserve_access_index));
#define TS_COMPAT 0x0002
static __always_inline int compat(struct pt_regs *regs)
{
	struct task_struct___ti *t = (struct task_struct___ti *)bpf_get_current_task();
	return BPF_CORE_READ(t, thread_info.status) & TS_COMPAT;
}
#else
enum { NR_close = 57, NR_read = 63, NR_write = 64, NR_readv = 65, NR_writev = 66, NR_connect = 203,
       NR_sendto = 206, NR_recvfrom = 207, NR_sendmsg = 211, NR_recvmsg = 212 };
struct pt_regs { __u64 regs[31]; __u64 pstate; __u64 orig_x0; __s32 syscallno; } __attribute__((preserve_access_index));
#define SYS_ARG0(r) BPF_CORE_READ(r, orig_x0) // x0 is the return value by exit
#define SYS_ARG1(r) BPF_CORE_READ(r, regs[1])
#define SYS_ARG2(r) BPF_CORE_READ(r, regs[2])
#define SYS_NR(r) BPF_CORE_READ(r, syscallno)
#define PSR_MODE32_BIT 0x10 // the caller runs AArch32
static __always_inline int compat(struct pt_regs *regs) { return BPF_CORE_READ(regs, pstate) & PSR_MODE32_BIT; }
#endif

#define FD fd
#define A1 SYS_ARG1(regs)
#define A2 SYS_ARG2(regs)
#define RAW_ENTER(name, in)                            \
	case NR_##name:                                \
		fd = SYS_ARG0(regs);                   \
		if (traced(fd) && !compat(regs))       \
			in;                            \
		return 0;
#define RAW_EXIT(name, in) case NR_##name:

// sys_enter(struct pt_regs *regs, long id)
SEC("raw_tracepoint/sys_enter")
int cq_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	__u32 fd, tgid;
	switch (ctx->args[1]) {
	DATA_SYSCALLS(RAW_ENTER)
	case NR_connect:
		tgid = bpf_get_current_pid_tgid() >> 32;
		if (bpf_map_lookup_elem(&procs, &tgid) && !compat(regs))
			connect_in(SYS_ARG0(regs), A1);
		return 0;
	case NR_close:
		fd = SYS_ARG0(regs);
		if (traced(fd) && !compat(regs))
			close_in(fd);
		return 0;
	}
	return 0;
}

// sys_exit(struct pt_regs *regs, long ret): only syscalls kept by
// sys_enter (in inflight or connecting) go further.
SEC("raw_tracepoint/sys_exit")
int cq_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	long ret = ctx->args[1];
	switch (SYS_NR(regs)) {
	DATA_SYSCALLS(RAW_EXIT)
		leave(ret);
		return 0;
	case NR_connect:
		connect_out(ret);
		return 0;
	}
	return 0;
}

SEC("raw_tracepoint/sched_process_exec")
int cq_exec_raw(void *ctx) { exec(); return 0; }
#undef FD
#undef A1
#undef A2
#endif

// Perf syscall tracepoints (see /sys/kernel/tracing/events/syscalls/*/format):
// the kernel builds a perf record of the arguments before each run, but
// syscalls without a program of criseq's pay almost nothing: cheaper in all
// for a node's usual mix of syscalls than the raw tracepoints (see the
// benchmark in bench_test.go).
#define FD fd
#define A1 ctx->args[1]
#define A2 ctx->args[2]
#define PERF(name, in)                                  \
	SEC("tracepoint/syscalls/sys_enter_" #name)     \
	int cq_##name##_in(struct sys_enter *ctx)       \
	{                                               \
		__u32 fd = ctx->args[0];                \
		if (traced(fd))                         \
			in;                             \
		return 0;                               \
	}                                               \
	SEC("tracepoint/syscalls/sys_exit_" #name)      \
	int cq_##name##_out(struct sys_exit *ctx)       \
	{                                               \
		leave(ctx->ret);                        \
		return 0;                               \
	}
DATA_SYSCALLS(PERF)

SEC("tracepoint/syscalls/sys_enter_connect")
int cq_connect_in(struct sys_enter *ctx) { connect_in(ctx->args[0], ctx->args[1]); return 0; }
SEC("tracepoint/syscalls/sys_exit_connect")
int cq_connect_out(struct sys_exit *ctx) { connect_out(ctx->ret); return 0; }
SEC("tracepoint/syscalls/sys_enter_close")
int cq_close_in(struct sys_enter *ctx) { close_in(ctx->args[0]); return 0; }
SEC("tracepoint/sched/sched_process_exec")
int cq_exec(void *ctx) { exec(); return 0; }
