"""The offline CLIP tokenizer behaves like CLIP's where StyO depends on it."""

from styo.testing import TINY_WORDS, tiny_pipeline
from styo.tokenizer import build_clip_tokenizer, pretokens, train_bpe


def tokens(tok, text):
    return tok.convert_ids_to_tokens(tok(text).input_ids)


def test_every_training_word_is_one_token():
    tok = build_clip_tokenizer(TINY_WORDS)
    for word in TINY_WORDS:
        for piece in pretokens(word):
            assert tokens(tok, piece) == ["<|startoftext|>", piece + "</w>", "<|endoftext|>"]


def test_digits_split_like_clip():
    tok = build_clip_tokenizer(TINY_WORDS)
    assert tokens(tok, "ak47")[1:-1] == ["ak</w>", "4</w>", "7</w>"]
    assert tokens(tok, "m4a1")[1:-1] == ["m</w>", "4</w>", "a</w>", "1</w>"]
    assert tokens(tok, "sks")[1:-1] == ["sks</w>"]


def test_unknown_words_fall_back_to_characters_and_case_is_folded():
    tok = build_clip_tokenizer(TINY_WORDS)
    pieces = tokens(tok, "Zebra")[1:-1]
    assert "".join(pieces).replace("</w>", "") == "zebra"
    assert tok.unk_token_id not in tok("Zebra").input_ids[1:-1]


def test_padding_to_77_and_save_load(tmp_path):
    tok = build_clip_tokenizer(TINY_WORDS)
    ids = tok("a drawing", padding="max_length", max_length=tok.model_max_length).input_ids
    assert len(ids) == 77 and ids[0] == tok.bos_token_id and ids[3] == tok.eos_token_id
    tok.save_pretrained(tmp_path)
    from transformers import CLIPTokenizer

    again = CLIPTokenizer.from_pretrained(tmp_path)
    assert again("ak47 sks portrait").input_ids == tok("ak47 sks portrait").input_ids
    assert again.model_max_length == 77


def test_bpe_training_is_deterministic():
    assert train_bpe(["portrait", "drawing", "draw"]) == train_bpe(["portrait", "drawing", "draw"])


def test_tiny_pipeline_generates_and_round_trips(tmp_path):
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = tiny_pipeline()
    cross = [n for n in pipe.unet.attn_processors if n.endswith("attn2.processor")]
    assert {n.split(".")[0] for n in cross} == {"down_blocks", "up_blocks", "mid_block"}

    def run(p):
        g = torch.Generator().manual_seed(0)
        return p("a drawing with sks portrait", num_inference_steps=2, generator=g, output_type="np").images

    first = run(pipe)
    assert first.shape == (1, 16, 16, 3)
    np.testing.assert_array_equal(first, run(pipe))
    pipe.save_pretrained(tmp_path)
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(run(loaded), first, atol=1e-5)
