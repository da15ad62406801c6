#!/usr/bin/env python3
"""Writes src/builtin/proto_table.txt: the protobuf wire layout of the built-in kinds kubesim
serves, for decoding the protobuf bodies kubectl's typed clients send and for the built-in
OpenAPI schemas.

Input: checkouts of k8s.io/api and k8s.io/apimachinery (their generated.proto files give
field numbers, types and the +listType/+patchStrategy markers; their Go types give the JSON
names and which fields are pointers, whose zero values are meaningful).

    python3 tools/gen_proto_table.py API_CHECKOUT APIMACHINERY_CHECKOUT > src/builtin/proto_table.txt

Output, one message a line: `Name field=number:type[:flags]...` where names drop the
`k8s.io.api.` (written `A.`) and `k8s.io.apimachinery.pkg.` (written `M.`) prefixes, a type is
a scalar (string, bytes, bool, int32, int64), a message name, or `map<K,V>`, and flags are
`r` (repeated), `p` (Go pointer), `i` (inlined in the parent's JSON), `lt=map|set|atomic`, `lk=key,key`, `ps=merge,...`, `pk=key`.
"""
import os
import re
import sys

API, MACH = sys.argv[1], sys.argv[2]
ROOTS = [
    "k8s.io.api.core.v1." + k for k in ["Namespace", "Pod", "Service", "Event", "ConfigMap", "Secret", "ServiceAccount"]
] + [
    "k8s.io.api.apps.v1.Deployment", "k8s.io.api.batch.v1.Job", "k8s.io.api.autoscaling.v2.HorizontalPodAutoscaler",
    "k8s.io.api.policy.v1.PodDisruptionBudget", "k8s.io.api.networking.v1.Ingress", "k8s.io.api.networking.v1.NetworkPolicy",
    "k8s.io.api.rbac.v1.Role", "k8s.io.api.rbac.v1.RoleBinding", "k8s.io.api.rbac.v1.ClusterRole",
    "k8s.io.api.rbac.v1.ClusterRoleBinding", "k8s.io.api.coordination.v1.Lease", "k8s.io.api.events.v1.Event",
    "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions", "k8s.io.apimachinery.pkg.apis.meta.v1.Status",
]
# Messages with a JSON form of their own: not expanded.
SPECIAL = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time", "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration", "k8s.io.apimachinery.pkg.api.resource.Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString", "k8s.io.apimachinery.pkg.runtime.RawExtension",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1",
}
SCALARS = {"string", "bytes", "bool", "int32", "int64"}

FIELD = re.compile(r"^\s*(optional|repeated)?\s*(map<[^>]+>|[.\w]+)\s+(\w+)\s*=\s*(\d+);")


def parse_proto(text):
    pkg = re.search(r"^package ([\w.]+);", text, re.M).group(1)
    msgs, cur, comments = {}, None, []
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"^message (\w+) \{", s)
        if m:
            cur = msgs.setdefault(f"{pkg}.{m.group(1)}", [])
            comments = []
            continue
        if s == "}":
            cur = None
            continue
        if s.startswith("//"):
            comments.append(s[2:].strip())
            continue
        m = FIELD.match(line)
        if m and cur is not None:
            label, typ, name, num = m.groups()
            cur.append({"label": label or "", "type": typ, "name": name, "num": int(num), "markers": comments, "pkg": pkg})
        comments = []
    return pkg, msgs


def go_structs(dirpath):
    """struct name -> proto field number -> (json name, pointer, inline)."""
    out = {}
    for fn in sorted(os.listdir(dirpath)):
        if not fn.endswith(".go") or fn.endswith("_test.go") or fn.startswith("zz_") or fn.startswith("generated"):
            continue
        text = open(os.path.join(dirpath, fn)).read()
        for m in re.finditer(r"^type (\w+) struct \{\n(.*?)^\}", text, re.M | re.S):
            fields = {}
            for line in m.group(2).splitlines():
                # `Name Type `tags`` or an embedded `Type `tags``.
                t = re.match(r"^\s*(\w+\s+)?(\S+)\s+`(.*)`", line)
                if not t:
                    continue
                named, gotype, tags = t.groups()
                pb = re.search(r'protobuf:"\w+,(\d+),[^"]*?(?:name=(\w+))?[,"]', tags)
                js = re.search(r'json:"([^",]*)', tags)
                if pb:
                    # An embedded struct without a JSON name has its fields promoted.
                    inline = named is None and not (js and js.group(1))
                    name = js.group(1) if js and js.group(1) else pb.group(2)
                    fields[int(pb.group(1))] = (name, gotype.startswith("*"), inline)
            out[m.group(1)] = fields
    return out


protos, gos = {}, {}
for root in [API, MACH]:
    # Every package: the newest kinds reach into alpha groups (scheduling, resource).
    for d, _, files in os.walk(root):
        if "generated.proto" not in files or "/.git" in d:
            continue
        pkg, msgs = parse_proto(open(os.path.join(d, "generated.proto")).read())
        protos.update(msgs)
        gos[pkg] = go_structs(d)


def resolve(typ, pkg):
    if typ in SCALARS:
        return typ
    if typ.startswith("."):
        return typ[1:]
    return f"{pkg}.{typ}"


def short(name):
    return name.replace("k8s.io.api.", "A.").replace("k8s.io.apimachinery.pkg.", "M.")


order, seen = [], set()


def visit(name):
    if name in seen or name in SPECIAL or name in SCALARS:
        return
    seen.add(name)
    if name not in protos:
        sys.exit(f"unknown message {name}")
    order.append(name)
    for f in protos[name]:
        t = f["type"]
        if t.startswith("map<"):
            visit(resolve(t[4:-1].split(",")[1].strip(), f["pkg"]))
        else:
            visit(resolve(t, f["pkg"]))


for r in ROOTS:
    visit(r)

def rev(d):
    return os.popen(f"git -C {d} rev-parse --short=12 HEAD 2>/dev/null").read().strip() or "unknown"


print(f"# Generated by tools/gen_proto_table.py from k8s.io/api {rev(API)} and k8s.io/apimachinery {rev(MACH)}; do not edit.")
for name in order:
    pkg, msg = name.rsplit(".", 1)
    go = gos.get(pkg, {}).get(msg, {})
    parts = [short(name)]
    for f in protos[name]:
        jname, ptr, inline = go.get(f["num"], (f["name"], False, False))
        jname = jname or f["name"]
        t = f["type"]
        if t.startswith("map<"):
            k, v = [x.strip() for x in t[4:-1].split(",")]
            typ = f"map<{k},{short(resolve(v, f['pkg']))}>"
        else:
            typ = short(resolve(t, f["pkg"]))
        flags = []
        if f["label"] == "repeated":
            flags.append("r")
        if ptr:
            flags.append("p")
        if inline:
            flags.append("i")
        for mk in f["markers"]:
            for key, flag in [("+listType=", "lt"), ("+listMapKey=", "lk"), ("+patchStrategy=", "ps"), ("+patchMergeKey=", "pk")]:
                if mk.startswith(key):
                    val = mk[len(key):].strip()
                    existing = [x for x in flags if x.startswith(flag + "=")]
                    if flag == "lk" and existing:
                        flags[flags.index(existing[0])] += "," + val
                    elif not existing:
                        flags.append(f"{flag}={val}")
        parts.append(f"{jname}={f['num']}:{typ}" + "".join(":" + x for x in flags))
    print(" ".join(parts))
