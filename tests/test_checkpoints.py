from rlmec_core.trainers.sft import checkpoint_step, last_complete_checkpoint


def test_a_checkpoint_cut_off_mid_save_is_never_resumed_from(tmp_path):
    assert last_complete_checkpoint(tmp_path / "missing") is None
    for step in (4, 8):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"w")
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    # checkpoint-8 has weights but no trainer_state.json: the save was interrupted
    last = last_complete_checkpoint(tmp_path)
    assert last is not None and checkpoint_step(last) == 4
    assert not (tmp_path / "checkpoint-8").exists()
    assert checkpoint_step(None) == 0
