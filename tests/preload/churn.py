"""Allocation churn for the LD_PRELOAD tests: dicts, lists, strings, bytes and
a few C extension modules, in several threads, then a fork from the
multi-threaded process. Prints only results that do not depend on timing or
addresses, so the output with and without the preload must be identical."""
import hashlib
import json
import os
import re
import sys
import threading
import zlib

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20000


def churn(seed, rounds):
    d = {}
    lst = []
    h = hashlib.sha256()
    for i in range(rounds):
        k = (i * 2654435761 + seed) % 5003
        s = ("x%d-" % k) * (k % 37 + 1)
        d[s[:20] + str(i % 911)] = [s, i, {"k": k}]
        lst.append(s.upper())
        if len(lst) > 2000:
            del lst[: len(lst) // 2]
        if i % 1000 == 0:
            blob = json.dumps(d, sort_keys=True).encode()
            h.update(zlib.compress(blob[:100000]))
            d = {k2: v for k2, v in d.items() if hash(k2) % 3}
    h.update(" ".join(sorted(set(lst))).encode())
    h.update(re.sub(r"x(\d+)", r"<\1>", "".join(lst[:100])).encode())
    return h.hexdigest()


results = {}


def worker(n):
    results[n] = churn(n, ROUNDS)


threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
for t in threads:
    t.start()

# Fork while the other threads are busy allocating.
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    digest = churn(99, ROUNDS // 4)
    os.write(w, digest.encode())
    os._exit(0)
os.close(w)
child = b""
while True:
    chunk = os.read(r, 4096)
    if not chunk:
        break
    child += chunk
_, status = os.waitpid(pid, 0)

for t in threads:
    t.join()
for n in sorted(results):
    print("thread", n, results[n])
print("child", child.decode(), "status", os.waitstatus_to_exitcode(status))
