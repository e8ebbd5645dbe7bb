"""MkDocs hook: the spec reference page, generated from sweep's pydantic models at build time."""

from mkdocs.structure.files import File, Files


def on_files(files: Files, config) -> Files:
    from sweep.spec_reference import spec_reference

    files.append(File.generated(config, "reference.md", content=spec_reference()))
    return files
