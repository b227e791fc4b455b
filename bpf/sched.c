/* sched.c: on-CPU time and run-queue latency per process (tgid), aggregated in the kernel.
 *
 * Hooks (stable tracepoints only):
 *   sched:sched_switch        the task switched out (still `current` here) gets the time since it
 *                             was switched in; the task switched in ends its run-queue wait
 *   sched:sched_wakeup        a task became runnable: its run-queue wait starts
 *   sched:sched_wakeup_new    the same for a newly forked task
 *
 * Why this shape:
 * - sched_switch fires for every context switch on every CPU (tens of thousands per second on a
 *   busy host), so it does one per-CPU array lookup, one array lookup for the woken task and one
 *   hash update for the task leaving; no ring buffer, no helper beyond the clock.
 * - The tgid of the task switched in is not in the tracepoint's arguments (only its tid), and a
 *   kernel struct read would break "tracepoint arguments only". So the wait measured when a task
 *   is switched in is parked in the CPU's slot and charged to the task's tgid when that same task
 *   is switched out on that CPU, when it is `current` and its tgid is known.
 * - Totals live in `totals`, keyed by tgid; the worker takes and deletes them in one batch
 *   (BPF_MAP_LOOKUP_AND_DELETE_BATCH) every second, so the map only ever holds the processes of
 *   one second and the per-interval maximum needs no reset race. The map is not preallocated:
 *   a program still holding a pointer to an element the worker just deleted writes into memory
 *   the kernel frees after an RCU grace period, never into another process's totals.
 *
 * Caveats (best effort, counted rather than hidden):
 * - Wakeups are kept in an array indexed by tid & (WAKEUP_SLOTS - 1), with the tid stored to
 *   detect collisions: two runnable tasks whose tids collide lose the earlier wait (not counted).
 * - A task preempted while runnable starts a new wait at the switch (as bcc's runqlat does).
 * - The idle task (pid 0) is never charged; interrupt time is charged to the task it interrupted.
 * - The first slice of each CPU after attach and the wait of a task woken before attach are not
 *   counted. `totals` full (TOTALS_MAX processes in one second) is counted in CNT_TOTALS_FULL.
 * - The worker itself (SELF_TGID) is never charged.
 * - The worker detaches the tracepoints when the probe is switched off and re-attaches them later;
 *   slices and wakeups older than `attached_at` are stale and ignored.
 */
#define SELF_TGID __SELF_TGID__
#define WAKEUP_SLOTS 65536
#define TOTALS_MAX 32768
#define TASK_REPORT_MASK 0xff     /* prev_state bits of a task that went to sleep (0: runnable) */

enum counter {
    CNT_SWITCHES = 0,
    CNT_TOTALS_FULL = 1,      /* a process's time not counted: `totals` was full */
    CNT_MAX = 2,
};

/* Per CPU: who runs and since when, and the run-queue wait it had before it got the CPU. */
struct cpu_slot {
    u64 since_ns;
    u64 wait_ns;
    u32 pid;
    u32 waited;               /* 1: wait_ns is a measured wait still to be charged */
};

struct wakeup {
    u64 ts;
    u32 pid;
    u32 pad;
};

/* Mirrored by probes/programs/sched.py Totals. */
struct totals {
    u64 cpu_ns;
    u64 runq_wait_ns;
    u64 runq_wait_max_ns;
    u32 runq_waits;
    u32 pad;
    char comm[16];            /* names a process gone before the worker looks */
};

BPF_PERCPU_ARRAY(cpu_slots, struct cpu_slot, 1);
BPF_ARRAY(wakeups, struct wakeup, WAKEUP_SLOTS);
BPF_F_TABLE("hash", u32, struct totals, totals, TOTALS_MAX, BPF_F_NO_PREALLOC);
BPF_PERCPU_ARRAY(counters, u64, CNT_MAX);
BPF_ARRAY(attached_at, u64, 1);   /* set by the worker when it re-attaches: older state is stale */

static __always_inline void count(u32 idx) {
    u64 *v = counters.lookup(&idx);
    if (v)
        (*v)++;
}

static __always_inline void wait_starts(u32 pid, u64 now) {
    u32 slot = pid & (WAKEUP_SLOTS - 1);
    struct wakeup *w = wakeups.lookup(&slot);
    if (w) {
        w->ts = now;
        w->pid = pid;
    }
}

TRACEPOINT_PROBE(sched, sched_wakeup) {
    wait_starts(args->pid, bpf_ktime_get_ns());
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new) {
    wait_starts(args->pid, bpf_ktime_get_ns());
    return 0;
}

static __always_inline void charge(u32 tgid, u64 cpu_ns, struct cpu_slot *slot) {
    struct totals *t = totals.lookup(&tgid);
    if (!t) {  /* the process's first slice since the worker last took the totals */
        struct totals fresh = {};
        bpf_get_current_comm(fresh.comm, sizeof(fresh.comm));
        totals.insert(&tgid, &fresh);
        t = totals.lookup(&tgid);
        if (!t) {
            count(CNT_TOTALS_FULL);
            return;
        }
    }
    t->cpu_ns += cpu_ns;
    if (slot->waited) {
        t->runq_wait_ns += slot->wait_ns;
        t->runq_waits++;
        if (slot->wait_ns > t->runq_wait_max_ns)
            t->runq_wait_max_ns = slot->wait_ns;
    }
}

TRACEPOINT_PROBE(sched, sched_switch) {
    u32 zero = 0;
    struct cpu_slot *slot = cpu_slots.lookup(&zero);
    u64 *epoch = attached_at.lookup(&zero);  /* array lookups are inlined: a load, no call */
    if (!slot || !epoch)
        return 0;
    u64 now = bpf_ktime_get_ns();
    u32 prev = args->prev_pid;
    u32 next = args->next_pid;
    count(CNT_SWITCHES);
    if (prev != 0 && slot->pid == prev && slot->since_ns && slot->since_ns >= *epoch) {
        u32 tgid = bpf_get_current_pid_tgid() >> 32;
        if (tgid != SELF_TGID)
            charge(tgid, now - slot->since_ns, slot);
    }
    if (prev != 0 && (args->prev_state & TASK_REPORT_MASK) == 0)
        wait_starts(prev, now);  /* preempted, still runnable: waits for a CPU again */
    slot->pid = next;
    slot->since_ns = now;
    slot->waited = 0;
    if (next == 0)
        return 0;
    u32 w_slot = next & (WAKEUP_SLOTS - 1);
    struct wakeup *w = wakeups.lookup(&w_slot);
    if (w && w->pid == next && w->ts && w->ts >= *epoch && w->ts <= now) {
        slot->wait_ns = now - w->ts;
        slot->waited = 1;
        w->ts = 0;
    }
    return 0;
}
