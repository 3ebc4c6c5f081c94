"""Named people of the miniature world: one word that stands for a whole face."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from styo.world import architecture as arch
from styo.world import grounding, people
from styo.world import pretrain as pt
from styo.world.attributes import ATTRIBUTES, PRETRAIN_STYLES
from styo.world.captions import vocabulary


def test_names_are_new_words_and_each_is_one_token():
    words = set(vocabulary()) | set(arch.IDENTIFIER_WORDS)
    assert not words & set(people.NAMES) and len(set(people.NAMES)) == len(people.NAMES)
    with_names, plain = arch.build_tokenizer(people.NAMES), arch.build_tokenizer()
    for name in people.NAMES:
        assert with_names.tokenize(name) == [f"{name}</w>"]
    prompt = "a drawing with ak47 not aug style of sks not m4a1 portrait"
    assert with_names.tokenize(prompt) == plain.tokenize(prompt)  # the identifiers stay split as before
    assert arch.build_tokenizer(()).get_vocab() == plain.get_vocab()  # no cast: today's tokenizer
    with pytest.raises(ValueError, match="the cast has"):
        people.names(len(people.NAMES) + 1)
    with pytest.raises(ValueError, match="the cast has"):
        pt.PretrainConfig(people=len(people.NAMES) + 1)


def test_each_person_keeps_one_face_in_every_style_tilt_and_background():
    faces = people.faces(len(people.NAMES))
    assert len({tuple(f.items()) for f in faces}) == len(faces)
    assert people.faces(5) == faces[:5]  # a smaller cast is the start of a larger one
    pictures = [people.draw_picture(faces[3], seed) for seed in range(40)]
    assert pictures[7] == people.draw_picture(faces[3], 7)  # deterministic
    for style, attributes in pictures:
        assert style in PRETRAIN_STYLES and set(attributes) == set(ATTRIBUTES)
        assert all(attributes[n] == faces[3][n] for n in people.FACE_ATTRIBUTES)
    assert len({s for s, _ in pictures}) > 1 and len({a["background"] for _, a in pictures}) > 1


def test_a_person_caption_names_the_person_and_grounds_the_name_on_the_head():
    count = 6
    tokenizer = arch.build_tokenizer(people.names(count))
    rng = np.random.default_rng(0)
    face = people.faces(count)[2]
    contrasted = 0
    for seed in range(60):
        style, attributes = people.draw_picture(face, seed)
        text = people.person_caption(style, 2, attributes, count, rng)
        words = text.split()
        assert words[words.index("of") + 1] == "cosmo" and words[-1] == "portrait"
        assert not {"face", "skin", "hair", "haircut", "eyes", "mouth", "glasses"} & set(words)
        grounded = dict(grounding.grounded_words(text))
        assert grounded[words.index("cosmo")] == "head"
        if "cosmo not" in text:
            contrasted += 1
            assert words.index("cosmo") + 2 not in grounded  # the name after "not" is left free
        ids = tokenizer([text], padding="max_length", max_length=77, return_tensors="pt").input_ids
        grounding.batch_groundings([text], ids, tokenizer.eos_token_id)  # one token per word
    assert 0 < contrasted < 60


def test_a_share_of_each_batch_is_drawn_from_the_people_and_captioned_by_name():
    count, per_batch = 3, 16
    cfg = pt.PretrainConfig(people=count, people_share=0.25, unet_batch=per_batch, empty_caption_p=0.0)
    n_main, n_cast = 20, 6
    data = {"styles": np.zeros(n_main + n_cast, np.int64),
            "attributes": np.zeros((n_main + n_cast, len(ATTRIBUTES)), np.int64),
            "person": np.array([-1] * n_main + [0, 0, 1, 1, 2, 2])}
    tokenizer = arch.build_tokenizer(people.names(count))
    batches = pt._UNetBatches(data, n_main + n_cast, (4, 2, 2), tokenizer, cfg, 1000)
    step = batches[0]
    assert (step["idx"][:12] < n_main).all() and (step["idx"][12:] >= n_main).all()
    texts = tokenizer.batch_decode(step["ids"], skip_special_tokens=True)
    cast = set(people.names(count))
    assert all(cast & set(t.split()) for t in texts[12:]) and not any(cast & set(t.split()) for t in texts[:12])


def test_a_larger_vocabulary_keeps_the_learned_rows_of_every_shared_token():
    old_tokenizer, new_tokenizer = arch.build_tokenizer(), arch.build_tokenizer(people.names(4))
    torch.manual_seed(1)
    old = arch.build_text_encoder(old_tokenizer)
    torch.manual_seed(2)
    new = arch.build_text_encoder(new_tokenizer)
    fresh = new.get_input_embeddings().weight.detach().clone()
    state = old.state_dict()
    pt._carry_embeddings(state, new, new_tokenizer, old_tokenizer)
    new.load_state_dict(state)
    rows, old_rows = new.get_input_embeddings().weight, old.get_input_embeddings().weight
    old_vocab = old_tokenizer.get_vocab()
    for token, i in new_tokenizer.get_vocab().items():
        expected = old_rows[old_vocab[token]] if token in old_vocab else fresh[i]
        assert torch.equal(rows[i], expected), token
    assert rows.shape[0] == len(new_tokenizer) > len(old_tokenizer)


@pytest.mark.slow
def test_pretraining_with_a_cast_continues_a_model_without_one(tmp_path):
    from diffusers import StableDiffusionPipeline

    tiny = dict(n_images=24, vae_images=24, vae_steps=2, vae_polish_steps=0, vae_texture_steps=2, vae_batch=4,
                unet_steps=2, unet_batch=4, checkpoint_every=1, warmup=1)
    pt.pretrain(tmp_path / "base", tmp_path / "work-base", pt.PretrainConfig(**tiny), device="cpu")
    cfg = pt.PretrainConfig(**tiny, people=2, people_images=3, name_lr=5e-3, init_from=str(tmp_path / "base"))
    pt.pretrain(tmp_path / "cast", tmp_path / "work-cast", cfg, device="cpu",
                vae_dir=tmp_path / "base")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "cast")
    assert pipe.tokenizer.tokenize("arlo bree") == ["arlo</w>", "bree</w>"]
    assert pipe.text_encoder.get_input_embeddings().weight.shape[0] == len(pipe.tokenizer)
    assert len(np.load(tmp_path / "work-cast" / "people.npz")["images"]) == 6
    assert pt.snapshot(tmp_path / "work-cast", tmp_path / "snap") == 1  # the snapshot knows the cast too
    snap = StableDiffusionPipeline.from_pretrained(tmp_path / "snap")
    assert len(snap.tokenizer) == len(pipe.tokenizer)
    # with --name-lr only the names' rows learn: every word the base knew keeps its row exactly
    base = StableDiffusionPipeline.from_pretrained(tmp_path / "base")
    rows, base_rows = (p.text_encoder.get_input_embeddings().weight for p in (pipe, base))
    base_vocab = base.tokenizer.get_vocab()
    for token, i in pipe.tokenizer.get_vocab().items():
        if token in base_vocab:
            assert torch.equal(rows[i], base_rows[base_vocab[token]]), token
    names = pipe.tokenizer.convert_tokens_to_ids(["arlo</w>", "bree</w>"])
    assert not torch.equal(rows[names], snap.text_encoder.get_input_embeddings().weight[names])


class _DrawsByName:
    """A stand-in pipeline that renders the named person's face (``faithful``) or always the first
    person's, in the captioned style."""

    def __init__(self, count: int, faithful: bool):
        self.count, self.faithful = count, faithful

    def __call__(self, prompt, *, num_images_per_prompt, generator, **_):
        from types import SimpleNamespace

        from styo.world.render import render

        words = prompt.split()
        person = people.names(self.count).index(words[words.index("of") + 1]) if self.faithful else 0
        style, seed = words[words.index("with") + 1], int(generator.initial_seed())
        looks = [people.draw_picture(people.faces(self.count)[person], seed + i)
                 for i in range(num_images_per_prompt)]
        return SimpleNamespace(images=[render(a, style, seed + i, layout="varied")
                                       for i, (_, a) in enumerate(looks)])


def test_name_fidelity_tells_a_model_that_draws_each_person_from_one_that_does_not():
    from styo.world.evaluate import name_fidelity
    from styo.world.judges import load_judges

    judges = load_judges()
    faithful = name_fidelity(_DrawsByName(6, True), judges, 6, num_images=3)
    assert faithful["kept"] > 0.95 and faithful["style"] > 0.95 and faithful["another"] < 0.8
    assert [p["name"] for p in faithful["people"]] == list(people.names(6))
    confused = name_fidelity(_DrawsByName(6, False), judges, 6, num_images=3)
    assert confused["kept"] < faithful["kept"] - 0.2  # one face for every name
    assert confused["people"][0]["kept"] == pytest.approx(faithful["people"][0]["kept"])
