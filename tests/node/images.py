"""Container images built on this machine, with no container engine and no registry.

Each image is one layer written as an OCI image archive (oci-layout, index.json, blobs) and
imported into containerd with `ctr -n k8s.io images import`. The sidecar and injector images
follow deploy/Dockerfile: `runtime_recipe` reads each runtime stage's COPY, USER and
ENTRYPOINT from the Dockerfile itself, and the layer holds the same binary at the same path,
the glibc libraries it links (what the distroless `cc` base gives it) and the base's
`nonroot` user, so the two recipes cannot drift apart unnoticed (tests/node/test_images.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The distroless base's users and groups (uid 65532 is "nonroot").
PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" \
         "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"


@dataclass
class RuntimeRecipe:
    """What a Dockerfile runtime stage puts in its image."""
    stage: str
    base: str
    copies: list[tuple[str, str]]  # (path in the builder, path in the image)
    user: str
    entrypoint: list[str]


def runtime_recipe(stage: str, dockerfile: Path = DOCKERFILE) -> RuntimeRecipe:
    """Parses `FROM <base> AS <stage>` up to the next FROM: its COPY --from, USER, ENTRYPOINT."""
    base, copies, user, entrypoint, inside = None, [], None, None, False
    for line in dockerfile.read_text().splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            m = re.fullmatch(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.I)
            inside = bool(m and m.group(2) == stage)
            if inside:
                base = m.group(1)
        elif inside and line.startswith("COPY "):
            m = re.fullmatch(r"COPY\s+--from=\S+\s+(\S+)\s+(\S+)", line)
            assert m, f"{dockerfile}: unexpected COPY in stage {stage}: {line}"
            copies.append((m.group(1), m.group(2)))
        elif inside and line.startswith("USER "):
            user = line.split(None, 1)[1]
        elif inside and line.startswith("ENTRYPOINT "):
            entrypoint = json.loads(line.split(None, 1)[1])
    assert base and copies and user and entrypoint, f"{dockerfile}: no complete stage {stage!r}"
    return RuntimeRecipe(stage, base, copies, user, entrypoint)


def builder_strip_flags(dockerfile: Path = DOCKERFILE) -> list[str]:
    """The flags the Dockerfile's builder stage gives `strip` for the binaries it copies out
    (the same step is applied here to the release binaries)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    m = re.search(r"&&\s*strip((?:\s+--?[a-z-]+)+)\s+/rmq-", text)
    assert m, f"{dockerfile}: the builder no longer strips the binaries; update tests/node/images.py"
    return m.group(1).split()


def linked_libraries(binary: Path) -> list[Path]:
    """The shared libraries `ldd` resolves for a dynamically linked binary (none if static)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


@dataclass
class Image:
    """One single-layer image: `files` maps a path in the image to (bytes or a host file, mode)."""
    name: str
    entrypoint: list[str]
    user: str = ""
    files: dict[str, tuple[bytes | Path, int]] = field(default_factory=dict)
    dirs: dict[str, int] = field(default_factory=dict)

    def add_binary(self, host: Path, path: str) -> None:
        """The binary and every library it links, at the paths the dynamic loader looks in."""
        self.files[path] = (host, 0o755)
        for lib in linked_libraries(host):
            self.files[str(lib)] = (lib.resolve(), 0o755)

    def layer(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            entries: dict[str, tuple[str, object, int]] = {}
            for path, mode in self.dirs.items():
                entries[path.strip("/")] = ("dir", None, mode)
            for path, (content, mode) in self.files.items():
                parts = path.strip("/").split("/")
                for i in range(1, len(parts)):
                    entries.setdefault("/".join(parts[:i]), ("dir", None, 0o755))
                entries[path.strip("/")] = ("file", content, mode)
            for name in sorted(entries):
                kind, content, mode = entries[name]
                info = tarfile.TarInfo(name)
                info.mode, info.mtime, info.uid, info.gid = mode, 0, 0, 0
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    data = content.read_bytes() if isinstance(content, Path) else content
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    def write_oci_archive(self, out: Path) -> Path:
        """The image as an OCI image layout in a tar file, named for `ctr images import`."""
        layer = self.layer()
        layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
        config = {"architecture": "amd64", "os": "linux",
                  "config": {"Env": [PATH_ENV], "Entrypoint": self.entrypoint,
                             **({"User": self.user} if self.user else {})},
                  "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": config_digest, "size": len(config_bytes)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                "digest": layer_digest, "size": len(layer)}]}
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
            "size": len(manifest_bytes),
            "annotations": {"io.containerd.image.name": self.name,
                            "org.opencontainers.image.ref.name": self.name.rsplit(":", 1)[1]}}]}
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out, "w") as tar:
            def put(name: str, data: bytes):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
            put("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            put("index.json", json.dumps(index).encode())
            for digest, data in ((layer_digest, layer), (config_digest, config_bytes),
                                 (manifest_digest, manifest_bytes)):
                put(f"blobs/sha256/{digest.split(':')[1]}", data)
        return out


def from_dockerfile(stage: str, name: str, binaries: dict[str, Path]) -> Image:
    """The image of a deploy/Dockerfile runtime stage, from the binaries built here
    (`binaries` maps the builder path of each COPY, e.g. "/rmq-sidecar", to the host file)."""
    recipe = runtime_recipe(stage)
    assert recipe.base.startswith("gcr.io/distroless/cc-debian12"), \
        f"deploy/Dockerfile's {stage} base is now {recipe.base}: update tests/node/images.py to match"
    image = Image(name, recipe.entrypoint, recipe.user)
    for src, dst in recipe.copies:
        image.add_binary(binaries[src], dst)
    image.files["/etc/passwd"] = (PASSWD.encode(), 0o644)
    image.files["/etc/group"] = (GROUP.encode(), 0o644)
    image.dirs["/tmp"] = 0o1777
    return image


def static_image(name: str, binary: Path, path: str, user: str = "") -> Image:
    """A static binary alone (the pause image, the test app)."""
    image = Image(name, [path], user)
    image.add_binary(binary, path)
    image.dirs["/tmp"] = 0o1777
    return image
