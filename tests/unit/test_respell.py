"""One home for the spelling of suggested options: raise sites write Python arguments, the CLI
and the spec runner respell them."""

from __future__ import annotations

from probing.constraints import respell, suggesting
from probing.errors import DataError, ModelError


def test_options_are_respelled_for_the_command_line_and_the_spec():
    err = suggesting(ModelError("give a file with arch='vit_t', or pass pretrained=False."),
                     arch="vit_t", pretrained=False)
    assert respell(err, "cli") == "give a file with --arch vit_t, or pass --no-pretrained."
    assert respell(err, "spec", {"arch": "model", "pretrained": "model"}) == \
        'give a file with [model] arch = "vit_t", or pass [model] pretrained = false.'
    assert str(err) == "give a file with arch='vit_t', or pass pretrained=False."  # the API's


def test_a_message_without_suggestions_is_left_as_it_is():
    err = DataError("image x.png cannot be read; use on_error='skip'.")  # not marked
    assert respell(err, "cli") == str(err)
    marked = suggesting(DataError("skip them with on_error='skip'."), on_error="skip")
    assert respell(marked, "cli") == "skip them with --on-error skip."
    assert respell(marked, "spec", {"on_error": "data.options"}) == \
        'skip them with [data.options] on_error = "skip".'
