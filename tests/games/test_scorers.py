"""Image-text scorers: the shared protocol, CLIP from a folder, ConSE, LiT, and their measures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

import weightspace as ws
from weightspace import WeightspaceValueError
from weightspace.games import (
    CLIPScorer,
    ConSEScorer,
    EmbeddingScorer,
    ImageTextScorer,
    ImageTower,
    LiTScorer,
    augmented_views,
    caption_retrieval,
    stamp_features,
    stamp_images,
    train_lit,
    zero_shot_accuracy,
)


class OneHot(EmbeddingScorer):
    """Image i (all pixels i / n) and text "cap{i}" embed to the same one-hot vector."""

    def __init__(self, n: int, **kwargs: int) -> None:
        super().__init__("onehot", **kwargs)
        self.n = n
        self.text_calls = 0
        self.batches: list[int] = []

    def _encode_images(self, images: Tensor) -> Tensor:
        self.batches.append(images.shape[0])
        idx = (images.mean(dim=(1, 2, 3)) * self.n).round().long()
        return torch.nn.functional.one_hot(idx, self.n + 1).float() + 0.01

    def _encode_texts(self, texts: list[str]) -> Tensor:
        self.text_calls += 1
        idx = torch.tensor([int(t[3:]) for t in texts])
        return torch.nn.functional.one_hot(idx, self.n + 1).float() + 0.01


def coded_images(n: int) -> Tensor:
    return (torch.arange(n, dtype=torch.float32) / n).view(n, 1, 1, 1).expand(n, 3, 2, 2)


def test_embedding_scorer_batches_normalises_and_caches_texts() -> None:
    s = OneHot(7, batch_size=3)
    assert isinstance(s, ImageTextScorer)
    sims = s.score(coded_images(7), ["cap0", "cap3", "cap3"])
    assert sims.shape == (7, 3)
    assert s.batches == [3, 3, 1]
    assert int(sims[:, 1].argmax()) == 3 and torch.equal(sims[:, 1], sims[:, 2])
    assert math.isclose(float(sims.max()), 1.0, abs_tol=1e-6)
    assert s.text_calls == 1  # "cap3" twice: embedded once
    s.embed_texts(["cap3", "cap0"])
    assert s.text_calls == 1  # both from the cache
    s.embed_texts(["cap5"])
    assert s.text_calls == 2


def test_text_cache_drops_the_least_recently_used() -> None:
    s = OneHot(10, cache_size=2)
    s.embed_texts(["cap1", "cap2"])
    s.embed_texts(["cap1"])  # cap1 is now the most recent
    s.embed_texts(["cap3"])  # evicts cap2
    assert list(s._text_cache) == ["cap1", "cap3"]


def test_uint8_and_float_images_score_alike() -> None:
    s = OneHot(4)
    x = torch.tensor([0, 64, 128, 191], dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    a = s.score(x, ["cap1", "cap2"])
    b = s.score(x.float() / 255.0, ["cap1", "cap2"])
    assert torch.equal(a, b)
    assert s.score(x[1], ["cap1"]).shape == (1, 1)  # a single [3, H, W] image


def test_bad_inputs_name_the_argument() -> None:
    s = OneHot(4)
    with pytest.raises(WeightspaceValueError, match=r"`texts` must be a sequence of strings"):
        s.score(coded_images(2), "cap1")
    with pytest.raises(WeightspaceValueError, match=r"`images` must be RGB images .* \[2, 2\]"):
        s.score(torch.zeros(2, 2), ["cap1"])
    with pytest.raises(WeightspaceValueError, match=r"`batch_size` must be at least 1, got 0"):
        OneHot(4, batch_size=0)


def test_caption_retrieval_of_an_oracle_and_of_a_constant_scorer() -> None:
    n = 30
    caps = [f"cap{i}" for i in range(n)]
    r = caption_retrieval(OneHot(n), coded_images(n), caps, pool=20, seed=1)
    assert (r.top1, r.top5, r.pool, r.images) == (1.0, 1.0, 20, n)
    assert (r.chance_top1, r.chance_top5) == (0.05, 0.25)

    class Constant(OneHot):
        def _encode_images(self, images: Tensor) -> Tensor:
            return torch.ones(images.shape[0], self.n + 1)

        def _encode_texts(self, texts: list[str]) -> Tensor:
            return torch.ones(len(texts), self.n + 1)

    r = caption_retrieval(Constant(n), coded_images(n), caps, pool=20)
    assert (r.top1, r.top5) == (0.0, 0.0)  # ties count against the scorer
    with pytest.raises(WeightspaceValueError, match=r"`pool` must be in \[2, 30\]"):
        caption_retrieval(OneHot(n), coded_images(n), caps, pool=31)
    with pytest.raises(WeightspaceValueError, match=r"`captions` has 29 entries for 30 images"):
        caption_retrieval(OneHot(n), coded_images(n), caps[:-1])


def test_zero_shot_accuracy_of_an_oracle() -> None:
    labels = torch.tensor([0, 1, 2, 3, 2, 1])
    images = (labels.float() / 4).view(6, 1, 1, 1).expand(6, 3, 2, 2)
    names = ["0", "1", "2", "3"]
    assert zero_shot_accuracy(OneHot(4), images, labels, names, template="cap{}") == 1.0
    wrong = torch.tensor([1, 1, 2, 3, 2, 1])
    acc = zero_shot_accuracy(OneHot(4), images, wrong, names, template="cap{}")
    assert math.isclose(acc, 5 / 6)
    with pytest.raises(WeightspaceValueError, match=r"`template` must contain"):
        zero_shot_accuracy(OneHot(4), images, labels, names, template="cap")


# --- CLIP from a local folder -------------------------------------------------------------


def _tiny_clip(folder: Path) -> None:
    transformers = pytest.importorskip("transformers")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz.":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 32,
            "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}  # fmt: skip
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
              "num_attention_heads": 4, "image_size": 32, "patch_size": 8}  # fmt: skip
    torch.manual_seed(0)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    transformers.CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]})
    )


def test_clip_scorer_loads_a_saved_clip_and_matches_transformers(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "tiny-clip"
    _tiny_clip(folder)
    scorer = CLIPScorer.from_folder(folder)
    assert isinstance(scorer, ImageTextScorer) and scorer.image_size == 32
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    texts = ["a cat.", "a dog."]
    sims = scorer.score(images, texts)
    # The same numbers straight from transformers.
    model = transformers.CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    with torch.no_grad():
        out = model(
            pixel_values=(images - 0.5) / 0.25, **tok(texts, padding=True, return_tensors="pt")
        )
    ref = out.image_embeds @ out.text_embeds.T
    torch.testing.assert_close(sims, ref, rtol=1e-4, atol=1e-5)


def test_clip_scorer_refuses_a_folder_without_a_clip(tmp_path: Path) -> None:
    with pytest.raises(WeightspaceValueError, match=r"must be a CLIP model folder"):
        CLIPScorer.from_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(WeightspaceValueError, match=r"holds a 'bert' model, not 'clip'"):
        CLIPScorer.from_folder(tmp_path)


# --- The real scorers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def towers() -> tuple[ImageTower, object]:
    from weightspace.models import minilm

    return ImageTower(), minilm()


def test_conse_combines_the_top_classes(towers: tuple[ImageTower, object]) -> None:
    tower, encoder = towers
    conse = ConSEScorer(tower, encoder, top_k=3)
    logits = torch.full((1, 1000), -20.0)
    logits[0, 7] = 10.0  # all the mass on class 7
    e = conse.combine(logits)
    torch.testing.assert_close(e[0], conse.class_embeddings[7], atol=1e-6, rtol=0)
    china = ws.data.sample_images()["china"]
    s = conse.score(china, ["a palace", "a goldfish", "a tractor"])
    assert int(s.argmax()) == 0
    with pytest.raises(WeightspaceValueError, match=r"`top_k` must be in \[1, 1000\], got 0"):
        ConSEScorer(tower, encoder, top_k=0)


def test_stamp_images_are_captioned_and_split_by_stamp() -> None:
    stamps = stamp_images(size=64, categories=["animals/amphibians", "animals/fish"])
    assert stamps.images.shape[1:] == (3, 64, 64) and stamps.images.dtype == torch.uint8
    assert "animals/amphibians/frog" in stamps.names
    assert stamps.captions[stamps.names.index("animals/amphibians/frog")] == "A frog."
    assert set(stamps.categories) == {"animals"} and len(stamps) == 13
    train, test = stamps.split(3, seed=0)
    assert len(test) == 3 and len(train) == 10
    assert set(train.names).isdisjoint(test.names)
    assert int(stamps.images[:, :, 0, 0].min()) == 255  # drawn over white
    with pytest.raises(WeightspaceValueError, match=r"`size` must be an int of at least 8"):
        stamp_images(size=4)
    with pytest.raises(WeightspaceValueError, match=r"matches `categories` \['nowhere'\]"):
        stamp_images(categories=["nowhere"])


def test_augmented_views_keep_the_original_and_pad_with_white() -> None:
    x = torch.zeros(2, 3, 16, 16)  # black squares
    v = augmented_views(x, 3, seed=0)
    assert v.shape == (3, 2, 3, 16, 16)
    assert torch.equal(v[0], x)
    assert bool((v[1:].amax(dim=(2, 3, 4)) > 0.99).all())  # shrunk copies show white around
    assert torch.equal(augmented_views(x, 3, seed=0), v)
    with pytest.raises(WeightspaceValueError, match=r"`views` must be at least 1, got 0"):
        augmented_views(x, 0)


def test_lit_learns_stamp_captions_and_round_trips(
    towers: tuple[ImageTower, object], tmp_path: Path
) -> None:
    tower, encoder = towers
    stamps = stamp_images(categories=["food"])
    assert len(stamps) >= 40
    feats = stamp_features(stamps, tower, views=1)
    assert feats.shape == (1, len(stamps), 1280)
    assert torch.equal(stamp_features(stamps, tower, views=1), feats)  # from the cache
    lit = train_lit(stamps, tower=tower, encoder=encoder, views=1, epochs=60, seed=0)
    r = caption_retrieval(lit, stamps.images, stamps.captions, pool=20, seed=0)
    assert r.top1 > 0.5  # on its own training stamps; chance is 0.05
    again = train_lit(stamps, tower=tower, encoder=encoder, views=1, epochs=60, seed=0)
    torch.testing.assert_close(again.heads.image.weight, lit.heads.image.weight)
    path = lit.save(tmp_path / "heads.safetensors")
    loaded = LiTScorer.load(path, tower, encoder)
    x = stamps.images[:4]
    torch.testing.assert_close(loaded.score(x, ["A pie."]), lit.score(x, ["A pie."]))
    with pytest.raises(WeightspaceValueError, match=r"holds no LiT heads"):
        torch.save({}, tmp_path / "x.pt")
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        LiTScorer.load(tmp_path / "other.safetensors", tower, encoder)
