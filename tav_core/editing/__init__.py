"""Editing a video: ``pipeline`` (``TuneAVideo``: encode, tune, invert, sample), ``prompt_alignment`` (which
tokens of two prompts correspond), ``attention_control`` (Prompt-to-Prompt and Video-P2P's attention control),
``null_text`` (null-text inversion), ``edit`` (the edit flows: plain, Prompt-to-Prompt, with null text). May import
``tuning``, ``loading``, ``sampling``, ``model`` and the shared leaves."""
