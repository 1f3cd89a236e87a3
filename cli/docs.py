"""`keel docs list|delete`: the stored documents, read on the store directly or through a
running server (`--url`, `KEEL_URL`, the one owning the data dir, or one on the default port;
see `cli.remote.find_target`)."""

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from graph.context import DEFAULT_TENANT
from graph.settings import Settings

PAGE = 500


def add_docs_parser(sub: Any) -> None:
    """Registers `keel docs list` and `keel docs delete`."""
    docs = sub.add_parser("docs", help="list or delete ingested documents")
    actions = docs.add_subparsers(dest="action", required=True)
    listing = actions.add_parser(
        "list", help="one line per document: id, chunks, time, title, injection flags"
    )
    listing.add_argument("--json", action="store_true", help="JSON lines instead of columns")
    delete = actions.add_parser("delete", help="remove documents by id")
    delete.add_argument("doc_ids", nargs="+")
    for action in (listing, delete):
        action.add_argument("--tenant", default=DEFAULT_TENANT, help="local store only")
        action.add_argument("--url", help="a keel server to ask instead of the local store")
        action.add_argument("--api-key", help="API key for the server (default: KEEL_API_KEY)")
    listing.set_defaults(func=run_list)
    delete.set_defaults(func=run_delete)


def _rows(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    with _Target(args) as target:
        cursor: str | None = ""
        while cursor is not None:
            page, cursor = target.page(cursor)
            yield from page


def run_list(args: argparse.Namespace) -> int:
    """Prints every document of the tenant, by id."""
    import json

    for row in _rows(args):
        if args.json:
            print(json.dumps(row))
        else:
            flagged = row.get("flagged_chunks", 0)
            mark = f"\tFLAGGED: {flagged} chunks carry instructions" if flagged else ""
            print(
                f"{row['id']}\t{row['chunks']} chunks\t{row['ingested_at']}\t{row['title']}{mark}"
            )
    return 0


def run_delete(args: argparse.Namespace) -> int:
    """Deletes each named document; exit status 1 when one of them did not exist."""
    missing = 0
    with _Target(args) as target:
        for doc_id in args.doc_ids:
            if target.delete(doc_id):
                print(f"deleted {doc_id}")
            else:
                print(f"keel: document {doc_id} not found", file=sys.stderr)
                missing += 1
    return 1 if missing else 0


class _Target:
    """The local corpus (holding the data dir's lock) or a server's `/v1/documents`."""

    def __init__(self, args: argparse.Namespace):
        self.settings = Settings()
        self.args = args

    def __enter__(self) -> "_Target":
        from cli.remote import connect, find_target, wait_for

        self.where = find_target(self.settings, "docs", self.args.url, create=False)
        if isinstance(self.where, str):
            key = self.args.api_key or (
                self.settings.api_key.get_secret_value() if self.settings.api_key else None
            )
            self.client = connect(self.where, key, wait_for(self.settings, self.args.url))
        else:
            from corpus import open_corpora

            self.corpus = open_corpora(self.settings).get(self.args.tenant)
        return self

    def __exit__(self, *exc: object) -> None:
        from cli.datadir import DataDirLock

        if isinstance(self.where, str):
            self.client.close()
        elif isinstance(self.where, DataDirLock):
            self.where.release()

    def page(self, cursor: str) -> tuple[list[dict[str, Any]], str | None]:
        if isinstance(self.where, str):
            from cli.remote import checked

            params = {"limit": PAGE} | ({"cursor": cursor} if cursor else {})
            body = checked(self.client.get("/v1/documents", params=params)).json()
            return body["documents"], body["next_cursor"]
        infos, next_cursor = self.corpus.documents(PAGE, cursor)
        return [vars(info) for info in infos], next_cursor

    def delete(self, doc_id: str) -> bool:
        if isinstance(self.where, str):
            from urllib.parse import quote

            from cli.remote import checked

            response = self.client.delete(f"/v1/documents/{quote(doc_id, safe='/')}")
            if response.status_code == 404:
                return False
            checked(response)
            return True
        return bool(self.corpus.delete(doc_id))
