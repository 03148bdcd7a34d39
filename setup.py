"""Builds the optional native core (mmaplog.storage.core._native) with the package.

Everything else about the package is in pyproject.toml. The extension is optional: without a
compiler the install still succeeds and mmaplog runs its pure-Python core (and says so);
MMAPLOG_REQUIRE_NATIVE=1 turns a failed build into a failed install (CI sets it).
MMAPLOG_NATIVE_CFLAGS adds compiler flags (the sanitizer build uses it).
"""

from __future__ import annotations

import os
import shlex

from setuptools import Extension, setup

SRC = "mmaplog/storage/core/src"
SOURCES = [
    "module.c",
    "channel.c",
    "framewriter.c",
    "hix.c",
    "xxh3.c",
    "reader.c",
    "sha256.c",
    "merkle.c",
    "follower.c",
    "capture.c",
    "entry_stream.c",
    "fields.c",
    "hix_grow.c",
    "lookup.c",
    "verify.c",
    "dispatch.c",
]
extra = shlex.split(os.environ.get("MMAPLOG_NATIVE_CFLAGS", ""))

native = Extension(
    "mmaplog.storage.core._native",
    sources=[f"{SRC}/{name}" for name in SOURCES],
    depends=[
        f"{SRC}/{name}"
        for name in (
            "native.h",
            "hix.h",
            "xxh3.h",
            "sha256.h",
            "sha256_consts.h",
            "entry_stream.h",
            "merkle.h",
        )
    ],
    include_dirs=[SRC],
    extra_compile_args=["-O3", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", *extra],
    extra_link_args=["-pthread", *extra],
    optional=os.environ.get("MMAPLOG_REQUIRE_NATIVE") != "1",
)

setup(ext_modules=[native])
