"""Every training test starts from an empty gin configuration in the root scope: `trainer.train` is a
gin configurable, so a binding or scope another test left behind in this worker would change its
arguments (a stage's hyper_overrides reaching a Text-to-LoRA run)."""

import gin
import pytest


@pytest.fixture(autouse=True)
def _fresh_gin():
  gin.clear_config()
  assert gin.current_scope_str() == "", f"a test left gin scope {gin.current_scope_str()!r} active"
  yield
  gin.clear_config()
