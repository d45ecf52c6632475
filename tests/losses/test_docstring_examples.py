"""The `Example:` sections of the loss modules run and show what the code returns."""

import doctest

import pytest

from keras_fgvc.losses import class_balanced, mining


@pytest.mark.parametrize("module", [class_balanced, mining], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, module.__name__) if t.examples]
    assert tests, f"{module.__name__} has no docstring examples"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {module.__name__} failed"
