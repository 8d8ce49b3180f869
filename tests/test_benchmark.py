from benchmarks import inference, train_step


def test_inference_benchmark_reports_the_contract_keys(capsys):
    report = inference.main(
        ["--tiny", "--steps", "2", "--runs", "1", "--options", "dpm,fp16", "--fast-steps", "1", "--json"]
    )
    keys = {"single_s", "plain_s", "single_over_plain", "pair_s", "pair_over_single", "preprocess_s", "device", "fast_s", "fast_speedup",
            "pair_one_pass_s", "pair_one_pass_over_single"}  # fmt: skip
    assert keys <= set(report) and report["device"] == "cpu"
    assert report["options"]["fp16"] == {"skipped": "CUDA only"} and report["options"]["dpm"]["steps"] == 1
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line.startswith("{") and '"single_over_plain"' in last_line


def test_train_step_benchmark_reports_every_combination(capsys):
    report = train_step.main(["--tiny", "--steps", "1", "--json"])
    assert set(report["combinations"]) == {"plain", "loc", "id", "all"} and report["device"] == "cpu"
    combinations, plain = report["combinations"], report["combinations"]["plain"]["mean_step_s"]
    assert plain > 0 and all(c["over_plain"] == round(c["mean_step_s"] / plain, 3) for c in combinations.values())
    assert report["all_over_plain"] == combinations["all"]["over_plain"]  # the ratios are of the times reported
    assert all(set(result) >= {"step_s", "peak_mem_gb"} for result in report["combinations"].values())
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith('{"device": "cpu"')
