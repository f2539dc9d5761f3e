"""Which tokens of a source and an edit prompt correspond, for Prompt-to-Prompt attention control.

Token positions count CLIP's start token as 0, as the text encoder sees them (77 in all). Words are the prompt's
space-separated words, as in Prompt-to-Prompt; a word may span several tokens.
"""

import torch

from ..errors import check

TOKENS = 77


def _word_tokens(tokenizer, prompt: str) -> list[list[int]]:
    """Token positions of each space-separated word of ``prompt``."""
    positions, start = [], 1
    for word in prompt.split():
        count = len(tokenizer(word, add_special_tokens=False).input_ids)
        positions.append(list(range(start, start + count)))
        start += count
    check(start <= TOKENS - 1, f"prompt {prompt!r} is longer than CLIP's 77 tokens; attention control needs it whole")
    return positions


def word_token_indices(tokenizer, prompt: str, word: str) -> list[int]:
    """Token positions of every occurrence of ``word`` in ``prompt``; refused, naming the word, when absent."""
    words = prompt.split()
    check(word in words, f"{word!r} is not a word of the prompt {prompt!r}; use one of its words: {', '.join(words)}")
    return [i for w, tokens in zip(words, _word_tokens(tokenizer, prompt)) if w == word for i in tokens]


def replacement_mapper(tokenizer, source: str, edit: str) -> torch.Tensor:
    """Word swap: (77, 77) matrix M with the edit's attention to token n = sum over w of the source's to w times
    M[w, n]. The prompts must have the same number of words; a swapped word spanning more tokens than the one it
    replaces shares its map equally among them."""
    src_words, edit_words = source.split(), edit.split()
    check(len(src_words) == len(edit_words),
          f"word swap needs prompts with the same number of words, but the source has {len(src_words)} and the edit "
          f"{len(edit_words)}; use mode 'refine' when words are added or removed")
    src_tokens, edit_tokens = _word_tokens(tokenizer, source), _word_tokens(tokenizer, edit)
    mapper = torch.zeros(TOKENS, TOKENS)
    mapper[0, 0] = 1  # the start token
    for a, b in zip(src_tokens, edit_tokens):
        if len(a) == len(b):
            mapper[a, b] = 1
        else:
            for j in b:
                mapper[a, j] = 1 / len(b)
    # the end and padding tokens (much of the attention goes to them) follow one to one from where the words end
    src_end, edit_end = (src_tokens[-1][-1] + 1 if src_tokens else 1), (edit_tokens[-1][-1] + 1 if edit_tokens else 1)
    for n in range(edit_end, TOKENS):
        mapper[min(src_end + n - edit_end, TOKENS - 1), n] = 1
    return mapper


def refinement_mapper(tokenizer, source: str, edit: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Refinement (words added or removed): for each edit token n, the aligned source token ``mapper[n]`` and
    ``alphas[n]`` = 1 if it has one (its map comes from the source) or 0 (a new word keeps its own map). The
    alignment is a global alignment of the two token sequences (match +1, mismatch -1, gap 0)."""
    x = tokenizer(source).input_ids
    y = tokenizer(edit).input_ids
    check(max(len(x), len(y)) <= TOKENS, "attention control needs both prompts within CLIP's 77 tokens")
    score = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    move = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]  # 1: gap in x (left), 2: gap in y (up), 3: pair
    for j in range(1, len(y) + 1):
        move[0][j] = 1
    for i in range(1, len(x) + 1):
        move[i][0] = 2
        for j in range(1, len(y) + 1):
            left, up = score[i][j - 1], score[i - 1][j]
            pair = score[i - 1][j - 1] + (1 if x[i - 1] == y[j - 1] else -1)
            score[i][j] = max(left, up, pair)
            move[i][j] = 1 if score[i][j] == left else 2 if score[i][j] == up else 3
    source_of = {}
    i, j = len(x), len(y)
    while i > 0 or j > 0:
        if move[i][j] == 3:
            i, j = i - 1, j - 1
            source_of[j] = i
        elif move[i][j] == 1:
            j -= 1
            source_of[j] = -1
        else:
            i -= 1
    mapper = torch.zeros(TOKENS, dtype=torch.long)
    alphas = torch.ones(TOKENS)
    for n in range(len(y)):
        mapper[n], alphas[n] = max(source_of[n], 0), float(source_of[n] >= 0)
    mapper[len(y):] = torch.arange(len(y), TOKENS)  # padding: by position, as Prompt-to-Prompt
    return mapper, alphas


def equalizer(tokenizer, prompt: str, weights: dict[str, float]) -> torch.Tensor:
    """Per-token scale of the cross-attention maps: ``weights[word]`` for the tokens of that word, 1 elsewhere."""
    scale = torch.ones(TOKENS)
    for word, value in weights.items():
        scale[word_token_indices(tokenizer, prompt, word)] = float(value)
    return scale
