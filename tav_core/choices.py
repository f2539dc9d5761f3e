"""Named choices shared by the engine, the CLI and the nodes, in a module without torch (``--help`` stays instant)."""

# how overlapping frame windows' results are weighted (tav_core.sampling.windows; ComfyUI's context windows' names)
FUSE_METHODS = ("pyramid", "flat", "overlap-linear")

# what a frame's self-attention looks at: Tune-A-Video's [frame 0 ‖ frame i-1], Video-P2P's frame 0 alone, or
# AnimateDiff's the frame itself (the image model's attention: its motion modules were trained beside it)
FRAME_ATTENTION = ("sparse_causal", "first_frame", "per_frame")

# what a ResNet GroupNorm takes statistics over: the whole clip (Tune-A-Video's reference, AnimateDiff v1), or each
# frame (AnimateDiff v2/v3/SDXL's inflated GroupNorm, diffusers' UNetMotionModel)
GROUP_NORMS = ("clip", "frame")

# which self-attention Prompt-to-Prompt's self-attention control replaces: the frames' (the paper's, at 32x32 and
# below) or the temporal attention (where Video-P2P's code applies it)
SELF_CONTROL = ("spatial", "temporal")

# text alignment: max(100 cos, 0) per frame, then the mean (CLIPScore per image, Hessel et al.); or the mean of
# 100 cos, then max(., 0) (torchmetrics' CLIPScore given the frames as one batch)
CLIP_CLAMPS = ("frame", "mean")

# SSIM: the mean over the whole frame, borders reflect-padded (torchmetrics); or without the 5-pixel border the
# 11x11 window overhangs (scikit-image's structural_similarity)
SSIM_CONVENTIONS = ("whole_frame", "skimage")

# the CLIP numbers: the paper's (projected embeddings; frame consistency over all pairs and consecutive frames, x100;
# CLIP score clamped), or also V2VBench's (frame consistency on the vision tower's pooled output before the
# projection, consecutive frames, clamped at 0, 0-1; text alignment 100 cos, not clamped)
SCORE_CONVENTIONS = ("paper", "v2vbench")

