"""Quiet library use: a NasExperiment with our strategy prints none of the known third-party lines, our
recipe warning points at the user's line, and an impossible PC-DARTS warm-up is one error naming both numbers."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''\
    import torch
    from nni_darts_ext import DartsCellSpace, PcDartsStrategy  # first: NNI's import-time notices are known ones
    from nni_darts_ext.evaluator import search_evaluator
    from nni.nas.experiment import NasExperiment
    torch.set_num_threads(1)

    def experiment(warmup, epochs):
        space = DartsCellSpace(width=4, num_cells=3, in_channels=1, image_size=8, num_classes=10)
        evaluator = search_evaluator('digits', recipe='darts', subset=64, max_epochs=epochs, limit_train_batches=1,
                                     enable_progress_bar=False)
        return NasExperiment(space, evaluator, PcDartsStrategy(k=2, warmup_epochs=warmup))

    try:
        experiment(15, 1).run()
    except ValueError as err:
        print('ERROR:', err)
    exp = experiment(1, 2)
    exp.run()  # RUN LINE
    print('ARCH', len(exp.export_top_models(formatter='dict')[0]))
''')


@pytest.mark.slow
def test_library_use_is_quiet_and_warns_at_the_users_line(tmp_path):
    script = tmp_path / 'user_script.py'
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'}
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), env.get('PYTHONPATH')]))
    env['HOME'] = str(tmp_path)  # NNI's experiment folder and checkpoint
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and 'ARCH 36' in proc.stdout, output[-4000:]
    # the impossible warm-up: one error naming both numbers, no NNI "Strategy failed to execute." above it
    assert ("ERROR: PcDartsStrategy: warmup_epochs=15 >= the evaluator's max_epochs=1, so α and β would never be "
            'trained and the export would be random; pass warmup_epochs < max_epochs (e.g. '
            'PcDartsStrategy(warmup_epochs=0), the reference 15/50 of the epochs) or train for more epochs.') in output
    for noise in ('Strategy failed to execute', 'training_service', 'is found to be not a nn.Module',
                  'GPU available:', 'TPU available:', 'Tip:', 'Fit with datamodule', 'never trained'):
        assert noise not in output, (noise, output[-4000:])
    # our recipe warning is attributed to the user's `exp.run()`, not to NNI's strategy.py
    run_line = SCRIPT.splitlines().index('exp.run()  # RUN LINE') + 1
    assert f'{script}:{run_line}: UserWarning: PcDartsStrategy is given the \'darts\' weight recipe' in output, \
        output[-4000:]
