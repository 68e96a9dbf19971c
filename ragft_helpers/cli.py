"""The ``ragft`` command: ``doctor`` and ``prefetch``."""
from __future__ import annotations

import argparse
import sys

import ragft_helpers  # noqa: F401  (probes the hub before any HF library is imported)
from ragft_helpers import assets, doctor, hub
from ragft_helpers.config import ConfigError, get_settings


def cmd_doctor(_args) -> int:
    checks = doctor.run_checks()
    print(doctor.format_checks(checks))
    failed = [c for c in checks if not c.ok]
    print(f"\n{len(failed)} problem(s) found." if failed else "\nAll checks passed.")
    return 1 if failed else 0


def cmd_prefetch(_args) -> int:
    """Online: download every asset into the caches. Offline: report what is cached."""
    settings = get_settings()
    status = hub.status()
    if status.reachable:
        from huggingface_hub import snapshot_download

        for repo in (assets.GPT2, assets.EMBEDDING_REPO):
            print(f"downloading {repo} → {snapshot_download(repo)}")
        from ragft_helpers import wikitext

        print(f"downloaded {wikitext.prefetch_hub_dataset().line()}")
    else:
        print(f"The hub is not reachable ({status.reason}); reporting what is cached.")
        for repo in (assets.GPT2, assets.EMBEDDING_REPO):
            where = assets._cached_snapshot(repo)
            print(f"{repo}: {'cached at ' + where if where else 'not cached'}")
    resolved = assets.load_causal_lm(settings)  # converts the bundled model once if needed
    embedding = assets.resolve_embedding_model(verbose=False)
    print(f"ready offline: {resolved.provenance.line()}")
    print(f"ready offline: {embedding.provenance('embedding').line()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ragft", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="check the machine, packages and assets").set_defaults(
        run=cmd_doctor)
    commands.add_parser("prefetch", help="cache models and data sets for offline use"
                        ).set_defaults(run=cmd_prefetch)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, assets.AssetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
