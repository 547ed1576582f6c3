"""Converters from HF transformers checkpoints (safetensors; needs the `safetensors` package,
not torch) to our params and model specs: `siglip` (SiglipModel -> two_towers) and `paligemma`
(PaliGemmaForConditionalGeneration -> paligemma). Each has `convert(state_dict, config)`,
`model_spec(config)` and `convert_folder(hf_dir)`, and runs as a command line
(`python -m multimodal.models.convert.siglip --hf_dir=... --output=PARAMS.npz`)."""
