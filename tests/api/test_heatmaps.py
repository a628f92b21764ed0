"""The heatmap route through a real server: its maps are colpali-engine's
`get_similarity_maps_from_embeddings` (ModernVBert: its processor's own method) computed on the
page's own embeddings straight from colpali-engine (model + processor on the uploaded image, nothing
of pagelens in between), within 1e-3 in float32, for tiny ColQwen2.5 and ColModernVBert; the PNG
overlay decodes at the page's size; unknown names are 404 and bad queries 400."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from pagelens.client import Client
from pagelens.errors import InvalidInput, NotFound
from pagelens.models.families import get_family
from pagelens.testing import build_tiny_checkpoint
from tests.api.server import REAL_KEY, running_server
from tests.conftest import encode, make_page

QUERY = "total amount due"
PAGE = make_page(600, 800, 7)  # portrait: a transposed grid would not match


@pytest.fixture(scope="module")
def modernvbert_server(tmp_path_factory):
    """A real server over a tiny ColModernVBert checkpoint: `(url, checkpoint)`."""
    checkpoint = build_tiny_checkpoint("colmodernvbert", tmp_path_factory.mktemp("modernvbert"))
    log_path = tmp_path_factory.mktemp("modernvbert-log") / "server.log"
    with running_server(checkpoint, api_key=REAL_KEY, log_path=log_path) as url:
        yield url, checkpoint


@pytest.fixture(params=["colqwen2_5", "colmodernvbert"])
def served(request, tiny_model):
    """`(family, url, checkpoint)` of a real server for each family (ColQwen2.5: the session's server)."""
    if request.param == "colqwen2_5":
        return request.param, request.getfixturevalue("server"), tiny_model
    url, checkpoint = request.getfixturevalue("modernvbert_server")
    return request.param, url, checkpoint


def colpali_engine_function():
    """colpali-engine's `get_similarity_maps_from_embeddings`, read from its file: importing
    `colpali_engine.interpretability` also imports its plotting helpers (matplotlib, seaborn: not installed)."""
    import importlib.util
    from pathlib import Path

    import colpali_engine

    path = Path(colpali_engine.__file__).parent / "interpretability" / "similarity_map_utils.py"
    spec = importlib.util.spec_from_file_location("reference_similarity_map_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_similarity_maps_from_embeddings


def colpali_engine_maps(family_name: str, checkpoint, image: Image.Image, query: str):
    """colpali-engine alone: `(maps (q, n_x, n_y), page rows, query rows, query input ids, processor)`."""
    family = get_family(family_name)
    _, processor_class = family.classes()
    model = family.from_pretrained(checkpoint, dtype=torch.float32).eval()
    processor = processor_class.from_pretrained(checkpoint)
    batch_images = processor.process_images([image])
    batch_queries = processor.process_queries([query])
    with torch.inference_mode():
        image_embeddings = model(**batch_images)
        query_embeddings = model(**batch_queries)
    if family_name == "colmodernvbert":
        n_patches = processor.get_n_patches((image.size[1], image.size[0]))  # this processor reads (height, width)
        image_mask = processor.get_local_image_mask(batch_images)
        compute = processor.get_similarity_maps_from_embeddings
    else:
        n_patches = processor.get_n_patches(image.size, spatial_merge_size=model.spatial_merge_size)
        image_mask = processor.get_image_mask(batch_images)
        compute = colpali_engine_function()
    (maps,) = compute(image_embeddings, query_embeddings, n_patches, image_mask)
    return maps.numpy(), image_embeddings[0].numpy(), query_embeddings[0].numpy(), batch_queries, processor


def upload(client: Client, image: Image.Image = PAGE) -> tuple[str, str]:
    name = f"heatmaps-{uuid.uuid4().hex[:8]}"
    client.create_collection(name)
    return name, client.add_document(name, encode(image), filename="page.png")["id"]


@pytest.mark.slow
def test_the_routes_maps_are_colpali_engines_on_the_pages_own_embeddings(served):
    family, url, checkpoint = served
    with Client(url, api_key=REAL_KEY) as client:
        name, document = upload(client)
        result = client.heatmap(name, document, 1, QUERY)
    expected, page_rows, query_rows, batch_queries, processor = colpali_engine_maps(family, checkpoint, PAGE, QUERY)

    n_x, n_y = expected.shape[1:]
    assert n_y > n_x  # a portrait page: more patch rows than columns
    assert result["grid"] == [n_y, n_x]
    rows = result["token_rows"]
    maps = np.asarray(result["maps"], dtype=np.float32)
    assert maps.shape == (len(result["tokens"]), n_y, n_x) and len(rows) == len(result["tokens"])
    np.testing.assert_allclose(maps, expected[rows].transpose(0, 2, 1), atol=1e-3, rtol=0)
    np.testing.assert_allclose(result["combined"], expected[rows].mean(axis=0).T, atol=1e-3, rtol=0)
    assert result["value_range"] == pytest.approx([maps.min(), maps.max()])
    maxsim = float((query_rows @ page_rows.T).max(axis=1).sum())
    assert result["score"] == pytest.approx(maxsim, abs=1e-2)

    # the tokens are the query's word pieces; what is dropped is augmentation and special tokens only
    assert "".join(result["tokens"]) == QUERY
    ids = batch_queries["input_ids"][0][batch_queries["attention_mask"][0].bool()].tolist()
    assert len(ids) == len(query_rows)
    augmentation = processor.tokenizer.convert_tokens_to_ids(processor.query_augmentation_token)
    dropped = {ids[row] for row in range(len(ids)) if row not in set(rows)}
    assert dropped and dropped <= {augmentation, *processor.tokenizer.all_special_ids}
    assert ids.count(augmentation) >= 10  # colpali-engine's query suffix, all left out
    assert all(ids[row] != augmentation for row in rows)


@pytest.mark.slow
def test_the_png_overlay_is_the_page_with_the_map_blended_over_it(server):
    with Client(server, api_key=REAL_KEY) as client:
        name, document = upload(client)
        page = np.asarray(client.page_image(name, document, 1).convert("RGB"), dtype=np.int16)
        result = client.heatmap(name, document, 1, QUERY)
        combined = Image.open(io.BytesIO(client.heatmap_png(name, document, 1, QUERY)))
        first_token = Image.open(io.BytesIO(client.heatmap_png(name, document, 1, QUERY, token=0)))
        with pytest.raises(InvalidInput, match=r"token must be between 0 and \d+"):
            client.heatmap_png(name, document, 1, QUERY, token=len(result["tokens"]))
    assert combined.format == "PNG" and combined.size == PAGE.size == first_token.size
    overlay = np.asarray(combined.convert("RGB"), dtype=np.int16)
    redder = (overlay[..., 0] - page[..., 0]) - (overlay[..., 2] - page[..., 2])
    assert (redder > 40).mean() > 0.05  # hot patches turn red
    # the reddest part of the overlay is where the combined map is highest; the page shows unchanged where lowest
    h, w = result["grid"]
    combined_map = np.asarray(result["combined"])

    def centre(index):
        y, x = np.unravel_index(index, combined_map.shape)
        return int((y + 0.5) * PAGE.height / h), int((x + 0.5) * PAGE.width / w)

    assert redder[centre(combined_map.argmax())] >= np.percentile(redder, 90)
    assert np.abs(overlay - page)[centre(combined_map.argmin())].sum() <= 12
    assert np.asarray(first_token).tobytes() != np.asarray(combined).tobytes()


@pytest.mark.slow
def test_unknown_names_are_404_and_bad_queries_400(server):
    with Client(server, api_key=REAL_KEY) as client:
        name, document = upload(client, make_page(300, 200, 8))
        for collection, doc, page, what in [
            ("no-such-collection", document, 1, "no-such-collection"),
            (name, "0" * 32, 1, "no document"),
            (name, "not-an-id", 1, "no document"),
            (name, document, 2, "has pages 1..1, not 2"),
            (name, document, 0, "has pages 1..1, not 0"),
        ]:
            with pytest.raises(NotFound, match=what):
                client.heatmap(collection, doc, page, QUERY)
        for query, message in [("   ", "query is empty"), ("x" * 9000, "over the limit of 8,192")]:
            with pytest.raises(InvalidInput, match=message):
                client.heatmap(name, document, 1, query)
