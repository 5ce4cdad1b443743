"""Writes one CRD version's openAPIV3Schema as JSON (how the files beside this one were made).

    python3 extract_crd_schema.py CRD.yaml VERSION OUT.json

The schema is copied unchanged (only YAML -> JSON); everything else in the CRD is dropped.
SOURCE.md names the repository, tag and path of each CRD.
"""

import json
import sys

import yaml


def main(crd_path: str, version: str, out_path: str) -> None:
    with open(crd_path) as f:
        crd = yaml.safe_load(f)
    assert crd["kind"] == "CustomResourceDefinition", f"{crd_path} is not a CRD"
    [ver] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    with open(out_path, "w") as f:
        json.dump(ver["schema"]["openAPIV3Schema"], f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
