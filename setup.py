"""Ships `vlmrecipes-autoload.pth` at the root of site-packages in regular (wheel) installs.

An editable install (`pip install -e .`) does not carry extra root files; `vlmr install-hook` writes the
same file there (the Makefile runs it) and `vlmr doctor` checks it.
"""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "vlmrecipes-autoload.pth"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):
            shutil.copyfile(os.path.join("vlmrecipes", PTH), os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH))
        return outputs


setup(cmdclass={"build_py": BuildPyWithPth})
