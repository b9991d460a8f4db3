#!/usr/bin/env python3
"""Fragmentation in a real program: Redis under each allocator.

Starts `redis-server` (Debian's, linked with jemalloc) once per allocator:
jemalloc as linked, the others through LD_PRELOAD. Sets N keys to values of
16-512 bytes, deletes a random 90% of them, then lets the server idle for
WAIT seconds (it still runs its timers, which allocate a little, and answers
a PING every 2 ms, the slowest of which is printed), reads every
remaining value back, and then sets new keys of 600-4000 bytes worth the
bytes deleted (the refill), and reads those back too. Prints RSS and PSS of
the server at each point, and Redis's own count of its live bytes
(`used_memory`, from `malloc_usable_size`) after the idle wait (PSS counts a page shared by two addresses once,
as meshing makes them), and exits non-zero if any value read back is wrong.

Usage: python3 benches/redis/frag.py [--n N] [--wait S] [--so PATH]
                                     [--only NAME,...]
The configurations: jemalloc, mimalloc, segalloc, segalloc-bg
(SEGALLOC_BACKGROUND=1), segalloc-bg-mesh (and SEGALLOC_MESH=1). The
segalloc library is target/release/libsegalloc.so (cargo build --release
--features override --lib) unless --so says otherwise. Needs redis-server
(apt-get install redis-server).
"""
import argparse, os, random, socket, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=1_000_000)
ap.add_argument("--wait", type=int, default=15)
ap.add_argument("--so", default=os.path.join(os.path.dirname(__file__), "../../target/release/libsegalloc.so"))
ap.add_argument("--only", default="")
ap.add_argument("--port", type=int, default=7790)
args = ap.parse_args()
SO = os.path.abspath(args.so)
CONFIGS = [
    ("jemalloc", "", {}),
    ("mimalloc", "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2", {}),
    ("segalloc", SO, {}),
    ("segalloc-bg", SO, {"SEGALLOC_BACKGROUND": "1"}),
    ("segalloc-bg-mesh", SO, {"SEGALLOC_BACKGROUND": "1", "SEGALLOC_MESH": "1"}),
]
if args.only:
    want = args.only.split(",")
    CONFIGS = [c for c in CONFIGS if c[0] in want]


def enc(*a):
    return b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in a)


def val(i, n):
    return ((b"%d:" % i) * (n // 3 + 2))[:n]


def run(name, pre, extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGALLOC_") and k != "LD_PRELOAD"}
    env.update(extra)
    if pre:
        env["LD_PRELOAD"] = pre
    srv = subprocess.Popen(["redis-server", "--port", str(args.port), "--save", "", "--appendonly", "no"],
                           env=env, stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            s = socket.create_connection(("127.0.0.1", args.port))
            break
        except OSError:
            time.sleep(0.05)
    f = s.makefile("rb")

    def reply():
        line = f.readline()
        if line[:1] == b"$":
            n = int(line[1:])
            return None if n < 0 else f.read(n + 2)[:-2]
        if line[:1] == b"-":
            raise RuntimeError(line)
        return line

    def pipe(cmds):
        out = []
        for i in range(0, len(cmds), 2000):
            chunk = cmds[i:i + 2000]
            s.sendall(b"".join(chunk))
            out += [reply() for _ in chunk]
        return out

    def mem():
        st = open("/proc/%d/status" % srv.pid).read()
        rss = int(next(l for l in st.split("\n") if l.startswith("VmRSS")).split()[1])
        pss = int(next(l for l in open("/proc/%d/smaps_rollup" % srv.pid) if l.startswith("Pss:")).split()[1])
        return rss / 1024, pss / 1024

    r = random.Random(7)
    sizes = [r.randint(16, 512) for _ in range(args.n)]
    pipe([enc(b"SET", b"k%d" % i, val(i, sizes[i])) for i in range(args.n)])
    filled = mem()
    dele = [i for i in range(args.n) if r.random() < 0.9]
    pipe([enc(b"DEL", b"k%d" % i) for i in dele])
    deleted = mem()
    # Idle, but for a PING every 2 ms, whose slowest reply shows how long
    # the server stalled (a purge or meshing step inside an allocation
    # holds up its event loop).
    t0 = time.time()
    slowest = 0.0
    while time.time() - t0 < args.wait:
        a = time.perf_counter()
        s.sendall(enc(b"PING"))
        reply()
        slowest = max(slowest, time.perf_counter() - a)
        time.sleep(0.002)
    idle = mem()
    maps = sum(1 for _ in open("/proc/%d/maps" % srv.pid))
    info = pipe([enc(b"INFO", b"memory")])[0].decode()
    used = int(next(l for l in info.split("\r\n") if l.startswith("used_memory:")).split(":")[1]) / 2**20
    live = sorted(set(range(args.n)) - set(dele))
    bad = sum(g != val(i, sizes[i]) for i, g in zip(live, pipe([enc(b"GET", b"k%d" % i) for i in live])))
    freed = sum(sizes[i] for i in dele)
    refill, tot = [], 0
    while tot < freed:
        refill.append(r.randint(600, 4000))
        tot += refill[-1]
    pipe([enc(b"SET", b"r%d" % i, val(i, n)) for i, n in enumerate(refill)])
    time.sleep(2)
    after = mem()
    got = pipe([enc(b"GET", b"r%d" % i) for i in range(len(refill))])
    bad += sum(g != val(i, refill[i]) for i, g in enumerate(got))
    s.sendall(enc(b"SHUTDOWN", b"NOSAVE"))
    srv.wait()
    cell = lambda m: "%.1f / %.1f" % m
    print("| %s | %s | %s | %.1f | %s (%.2fx) | %d | %.1f | %s | %s |" % (name, cell(filled), cell(deleted), used, cell(idle), idle[1] / used, maps, slowest * 1e3, cell(after),
                                             "ok" if bad == 0 and srv.returncode == 0 else "FAILED (%d wrong, exit %s)" % (bad, srv.returncode)), flush=True)
    return bad == 0 and srv.returncode == 0


print("Redis %s, %d keys of 16-512 B, 90%% deleted at random, %d s idle, then 600-4000 B keys worth the bytes deleted; "
      "RSS / PSS in MiB; %s" % (subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2],
                                args.n, args.wait, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
print()
print("| allocator | filled | after the deletes | Redis's `used_memory` | after %d s idle (PSS / used_memory) | mappings then | slowest PING while idle (ms) | after the refill | values |" % args.wait)
print("|---|---|---|---|---|---|---|---|---|")
ok = all([run(*c) for c in CONFIGS])
sys.exit(0 if ok else 1)
