"""Test helper: a tiny Stable unCLIP img2img pipeline with random weights, saved where
diffusers' own loader reads it, so the GenView path runs on CPU in seconds without a download.

Every component is the class the real stable-diffusion-2-1-unclip checkpoint uses, shrunk to one or two
layers and 32-64 px; the tokenizer gets a handful of words written here (the real vocabulary is a
download), which is all an empty prompt needs.
"""

from __future__ import annotations

import json
from pathlib import Path

IMAGE_SIZE = 32  # the CLIP encoder's input side (4 x 4 patches of 8 px)
PIXELS = 32  # the generated image's side (4 x 4 latents: the VAE halves twice... see below)


def _tokenizer(dir: Path) -> object:
    from transformers import CLIPTokenizer

    words = ["<|startoftext|>", "<|endoftext|>", "!", "a</w>", "photo</w>", "of</w>"]
    vocab = {w: i for i, w in enumerate(words)}
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (dir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(str(dir / "vocab.json"), str(dir / "merges.txt"), model_max_length=8)


def build_tiny_unclip(out: Path, seed: int = 0) -> Path:
    """Write a tiny StableUnCLIPImg2ImgPipeline to `out` (save_pretrained) and return `out`."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableUnCLIPImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    out = Path(out)
    torch.manual_seed(seed)
    embed = 16  # CLIP image embedding width
    feature_extractor = CLIPImageProcessor(crop_size=IMAGE_SIZE, size=IMAGE_SIZE)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        image_size=IMAGE_SIZE, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, projection_dim=embed))
    tokenizer = _tokenizer(out / ".vocab")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(
        sample_size=PIXELS // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=(2, 4),
        class_embed_type="projection", projection_class_embeddings_input_dim=2 * embed, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=(32,), in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=8,
                        sample_size=PIXELS)
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=feature_extractor, image_encoder=image_encoder,
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=embed),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=tokenizer, text_encoder=text_encoder, unet=unet,
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1),
        vae=vae)
    pipe.save_pretrained(out)
    return out
