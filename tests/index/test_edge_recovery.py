"""A Qdrant Edge write-ahead log that cannot be replayed (here: a payload nested past serde's
recursion limit, written below pagelens's metadata check, then the process killed) no longer makes
a collection unopenable: it opens from its last flushed state, which holds every document that
was stored whole, says what it gave up, and keeps working."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from pagelens.index.collections import Collections
from tests.index.test_pdf import make_pdf

POISON_AND_DIE = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from pagelens.index.collections import Collections
    from tests.index.test_pdf import make_pdf

    collection = Collections(sys.argv[1]).create("c")
    embed = lambda images: [np.full((3, 128), i + 1.0, np.float32) / 11.3 for i, _ in enumerate(images)]
    collection.add(make_pdf(2), name="whole.pdf", metadata={"team": "a"}, embed=embed, dpi=36)
    deep = {"leaf": 1}
    for _ in range(130):
        deep = {"a": deep}
    try:  # straight into the store, as no pagelens route can any more
        collection.store.add_document("poison", [np.ones((3, 128), np.float32)], name="p", metadata=deep)
    except BaseException as error:  # qdrant-edge panics once the payload is in
        print("poison refused by the store:", type(error).__name__)
    os._exit(0)  # killed: nothing closed
    """
)


def test_an_unreplayable_log_opens_from_the_last_flushed_state(tmp_path):
    data = tmp_path / "data"
    done = subprocess.run([sys.executable, "-c", POISON_AND_DIE, str(data)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    collections = Collections(data)
    try:
        collection = collections.get("c")
        recovered = collection.store.recovered
        assert recovered is not None and "could not be replayed" in recovered
        assert list(data.glob("c/store.unreplayable-wal-*")), "the log is kept for the operator"
        assert [(d["name"], d["pages"]) for d in collection.documents()] == [("whole.pdf", 2)]
        hits = collection.search(np.ones((2, 128), np.float32), k=10, mode="exact", filter=None)
        assert sorted(hit.page for hit in hits) == [1, 2] and {hit.document_id for hit in hits} != {"poison"}
        embed = lambda images: [np.ones((3, 128), np.float32) / 11.3 for _ in images]  # noqa: E731
        added = collection.add(make_pdf(3), name="after.pdf", metadata={}, embed=embed, dpi=36)
        assert added["pages"] == 3 and collection.store.page_count() == 5
    finally:
        collections.close()
    reopened = Collections(data)
    try:
        assert reopened.get("c").store.recovered is None  # the new log replays cleanly
        assert reopened.get("c").store.page_count() == 5
    finally:
        reopened.close()
