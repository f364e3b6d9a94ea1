import pytest

from portraittalk_core.clips import plan_clips
from portraittalk_core.errors import InputError

F, M = 8, 2


@pytest.mark.parametrize("n", [1, F - 1, F, F + 1, 10 * F + 3])
@pytest.mark.parametrize("motion", [0, M, F - 1])
def test_every_frame_generated_exactly_once(n, motion):
    clips = plan_clips(n, F, motion)
    generated = [i for c in clips for i in range(c.start, c.end)]
    assert generated == list(range(n))
    for previous, clip in zip(clips, clips[1:]):
        assert clip.start == previous.end
        assert clip.context == min(motion, clip.start)          # motion frames come from before
        assert clip.end > clip.start                            # every clip makes progress
    assert all(c.length <= F for c in clips)
    assert clips[0].context == 0


def test_invalid_plans_are_clear():
    with pytest.raises(InputError, match="Fix:"):
        plan_clips(0, F, M)
    with pytest.raises(InputError, match="motion frames"):
        plan_clips(10, F, F)
