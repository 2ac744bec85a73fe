"""Chinese fact patterns, applied per clause (see `clauses.clauses`).

Chinese drops the subject after the first clause ("我叫小雨，最喜欢弹吉他"); `clauses` puts
"我" back, so every pattern here starts at 我. Values run to the end of the clause (a
Chinese clause is short), minus trailing particles (了, 啦, 呢, 哦) and fillers (现在, 也),
which keeps the object whole ("最喜欢弹吉他" → "用户最喜欢弹吉他。").

Slots are shared with English where the question is the same (猫 and "cat" →
``pet.cat.name``; 住在 and "live in" → ``user.city``), so a fact told in one language
updates one told in the other. Preferences are keyed by the value itself.

Trade-offs: "我是…" is a job only with a known job word; "我在…工作" is a workplace;
negation needs an explicit change word (不再, 已经不, 戒了, 不…了).
"""
from __future__ import annotations

import re

from .clauses import CJK
from .fact import Fact, dedupe

ANIMALS = {"柯基": "dog", "泰迪": "dog", "哈士奇": "dog", "金毛": "dog", "柴犬": "dog", "布偶猫": "cat",
           "英短": "cat", "猫咪": "cat", "小猫": "cat", "猫": "cat", "小狗": "dog", "狗狗": "dog", "狗": "dog", "兔子": "rabbit",
           "鹦鹉": "parrot", "仓鼠": "hamster", "金鱼": "fish", "鱼": "fish", "乌龟": "turtle", "鸟": "bird",
           "蛇": "snake", "马": "horse", "刺猬": "hedgehog", "八哥": "bird"}
RELATIONS = {"妹妹": "sister", "姐姐": "sister", "哥哥": "brother", "弟弟": "brother", "妈妈": "mother",
             "母亲": "mother", "爸爸": "father", "父亲": "father", "朋友": "friend", "好朋友": "friend",
             "女朋友": "girlfriend", "男朋友": "boyfriend", "妻子": "wife", "老婆": "wife", "丈夫": "husband",
             "老公": "husband", "儿子": "son", "女儿": "daughter", "爷爷": "grandfather", "奶奶": "grandmother",
             "外婆": "grandmother", "姥姥": "grandmother", "外公": "grandfather", "室友": "roommate",
             "同事": "colleague", "表姐": "cousin", "表妹": "cousin", "表哥": "cousin", "表弟": "cousin",
             "老板": "boss", "邻居": "neighbour"}
JOBS = ("护士", "老师", "教师", "医生", "程序员", "工程师", "学生", "大学生", "研究生", "律师", "厨师", "设计师",
        "会计", "司机", "记者", "警察", "作家", "画家", "演员", "歌手", "店员", "销售", "翻译", "编辑", "摄影师",
        "建筑师", "药剂师", "兽医", "消防员", "飞行员", "快递员", "外卖员", "服务员", "咖啡师", "面包师", "农民",
        "科学家", "研究员", "教授", "公务员", "会计师", "牙医", "导游", "模特", "主播", "插画师", "自由职业者",
        "家庭主妇", "保安", "理发师", "木匠", "电工", "程序猿", "产品经理", "经理", "老板", "实习生", "钟表匠")

_TAIL = re.compile(r"(?:了|啦|呢|哦|呀|吧|啊|的话|而已|现在|也是|哈|嘛)+$")
_NAME = rf"[{CJK}A-Za-z·]{{1,6}}"
_PRON = "你他她它们这那谁"


def _clean(value: str, *, limit: int = 16) -> str:
    value = re.split(r"[，。！？；,.!?;\s（）()「」]", value, maxsplit=1)[0]
    value = _TAIL.sub("", value)
    return value[:limit]


def _name(value: str) -> str:
    value = _clean(value, limit=6)
    value = re.split(r"(?:是|在|和|今年|住|，)", value, maxsplit=1)[0]
    return value if value and value[0] not in _PRON else ""


def events(clause: str, *, speaker: str = "user") -> list[Fact]:
    """承诺与约定：user messages ("我答应你…", "你答应过我…", "我们约好…") and the character's."""
    c = clause.strip()
    out: list[Fact] = []
    who_me, who_you = ("用户", "你") if speaker == "user" else ("你", "用户")
    m = re.search(r"我(?:答应|保证|发誓|承诺)(?:过)?(?:你|您)?[，,]?(?:明天|以后|一定)*(?:会|一定会|要)?(.+)", c)
    if m and _clean(m.group(1)) and not re.match(r"^了?(?:妈妈|爸爸|老师|朋友|家人|他|她)", m.group(1)):
        what = _clean(m.group(1), limit=24).replace("你", who_you).replace("我", who_me)
        out.append(Fact(f"{who_me}答应过：{what}。", None, what, kind="event"))
    if speaker == "user":
        m = re.search(r"你(?:答应过?|保证过?|说过要|说好要)(?:我)?(?:会|要)?(.+)", c)
        if m and _clean(m.group(1)):
            what = _clean(m.group(1), limit=24).replace("我", "用户")
            out.append(Fact(f"你答应过：{what}。", None, what, kind="event"))
    m = re.search(r"(?:我们|咱们)(?:约好了?|说好了?|商量好了?|决定)(.+)", c)
    if m and not out and _clean(m.group(1)):
        what = _clean(m.group(1), limit=24)
        out.append(Fact(f"你和用户约好：{what}。", None, what, kind="event"))
    return out


def facts(clause: str) -> list[Fact]:
    """The user facts in one Chinese clause."""
    c = clause.strip()
    out: list[Fact] = []

    def add(text: str, slot: str | None, value: str, *, negated: bool = False) -> None:
        if value:
            out.append(Fact(text, slot, value, negated=negated))

    for m in re.finditer(rf"(?:我叫|我的名字是|我名叫|我的名字叫|我姓名是)({_NAME})", c):
        add(f"用户叫{_name(m.group(1))}。", "user.name", _name(m.group(1)))
    for m in re.finditer(rf"(?:叫我|称呼我|大家都叫我|朋友都叫我)({_NAME})", c):
        if not m.group(0).startswith("叫我") or not re.search(r"我叫我", c):
            add(f"用户希望被称为{_name(m.group(1))}。", "user.callname", _name(m.group(1)))
    animals = "|".join(sorted(ANIMALS, key=len, reverse=True))
    named = False
    for m in re.finditer(rf"我(?:家)?(?:养了|养着|有|养|还养了|也养了|领养了|收养了)(?:一|两|几|三)?(?:只|条|匹|个)?"
                         rf"((?:[{CJK}]{{1,4}}的)?|[{CJK}]{{0,2}}?)({animals})(?:[，,]?(?:它|牠)?(?:叫做?|名叫|的名字是|名字叫)({_NAME}))?", c):
        adj, animal, n = m.group(1), m.group(2), _name(m.group(3) or "")
        if n:
            add(f"用户养了一只{adj}{animal}，叫{n}。", f"pet.{ANIMALS[animal]}.name", n)
            named = True
        else:
            add(f"用户养了一只{adj}{animal}。", f"pet.{ANIMALS[animal]}", f"{adj}{animal}")
    if not named:
        for m in re.finditer(rf"我(?:家)?的?((?:[{CJK}]{{1,4}}的)?)({animals})(?:叫做?|名叫|的名字是|名字叫)({_NAME})", c):
            adj, animal, n = m.group(1), m.group(2), _name(m.group(3))
            add(f"用户养了一只{adj}{animal}，叫{n}。", f"pet.{ANIMALS[animal]}.name", n)
    rels = "|".join(sorted(RELATIONS, key=len, reverse=True))
    for m in re.finditer(rf"我(?:的)?({rels})(?:叫做?|名叫|的名字是)({_NAME})", c):
        rel, n = m.group(1), _name(m.group(2))
        add(f"用户的{rel}叫{n}。", f"rel.{RELATIONS[rel]}.name", n)
    jobs = "|".join(sorted(JOBS, key=len, reverse=True))
    for m in re.finditer(rf"我(?:的)?({rels})([{CJK}]{{1,3}}?)?(?:现在|也|如今)?(?:是(?:一名|一位|个|一个)?)([{CJK}]{{0,6}}?(?:{jobs}))", c):
        rel, n, job = m.group(1), m.group(2) or "", m.group(3)
        add(f"用户的{rel}{n}是{job}。", f"rel.{RELATIONS[rel]}.job", job)
    for m in re.finditer(rf"我(?:的)?({rels})([{CJK}]{{0,3}}?)(?:住在|在)([{CJK}A-Za-z]{{1,8}}?)(?:工作|上班|生活|住|$)", c):
        rel, n, place = m.group(1), m.group(2) or "", _clean(m.group(3))
        if "工作" in m.group(0) or "上班" in m.group(0):
            add(f"用户的{rel}{n}在{place}工作。", f"rel.{RELATIONS[rel]}.work", place)
        else:
            add(f"用户的{rel}{n}住在{place}。", f"rel.{RELATIONS[rel]}.city", place)

    neg_city = re.search(rf"我(?:已经)?(?:不再住在|不住在)([{CJK}A-Za-z]{{1,8}}?)(?:了|$)", c)
    if neg_city:
        place = _clean(neg_city.group(1))
        add(f"用户不再住在{place}。", "user.city", place, negated=True)
    else:
        for m in re.finditer(rf"我(?:们)?(?:现在|目前|一直)?(?:住在|家在|生活在|定居在)([{CJK}A-Za-z]{{1,10}})", c):
            place = re.sub(r"(?:的|里|附近|这边|那边).*$", "", _clean(m.group(1))) or _clean(m.group(1))
            add(f"用户住在{place}。", "user.city", place)
        for m in re.finditer(rf"我(?:们)?(?:已经|刚|去年|今年|上个月|最近)?(?:[{CJK}]{{0,4}})?搬(?:到|去)了?([{CJK}A-Za-z]{{1,10}})", c):
            place = _clean(m.group(1))
            add(f"用户搬到了{place}。", "user.city", place)
    for m in re.finditer(rf"我(?:以前|原来|曾经)住在([{CJK}A-Za-z]{{1,8}})", c):
        place = _clean(m.group(1))
        add(f"用户以前住在{place}。", f"past.city.{place}", place)
    for m in re.finditer(rf"我(?:是|来自)([{CJK}]{{1,6}}?)人", c):
        add(f"用户是{m.group(1)}人。", "user.origin", m.group(1))
    for m in re.finditer(rf"我(?:来自|老家是|老家在|出生在|在)([{CJK}A-Za-z]{{1,8}}?)(?:长大|出生)?(?:的|$|，)", c):
        if "来自" in m.group(0) or "老家" in m.group(0) or "长大" in m.group(0) or "出生" in m.group(0):
            add(f"用户来自{_clean(m.group(1))}。", "user.origin", _clean(m.group(1)))

    if re.search(r"我(?:已经)?(?:辞职了|不上班了|退休了|失业了)", c):
        what = "退休" if "退休" in c else "辞职"
        out.append(Fact(f"用户已经{what}了。", "user.job", "", negated=what == "辞职"))
    m = re.search(rf"我(?:已经)?不再是([{CJK}]{{0,6}}?(?:{jobs}))了?", c) or re.search(rf"我(?:已经)?不是([{CJK}]{{0,6}}?(?:{jobs}))了", c)
    if m:
        add(f"用户不再是{m.group(1)}了。", "user.job", m.group(1), negated=True)
    else:
        for m in re.finditer(rf"我(?:现在)?(?:是|当)(?:一名|一位|一个|个)?([{CJK}]{{0,6}}?(?:{jobs}))", c):
            add(f"用户是{m.group(1)}。", "user.job", m.group(1))
        for m in re.finditer(rf"(?:我的工作是|我的职业是|我做)([{CJK}A-Za-z]{{1,8}})", c):
            add(f"用户的职业是{_clean(m.group(1))}。", "user.job", _clean(m.group(1)))
        for m in re.finditer(rf"我(?:现在|目前)?在([{CJK}A-Za-z]{{1,10}}?)(?:工作|上班|实习)", c):
            add(f"用户在{m.group(1)}工作。", "user.workplace", m.group(1))
    m = re.search(rf"我(?:答应了?|保证过?)((?:{rels}|老师|家人))([{CJK}A-Za-z0-9]{{2,16}})", c)
    if m:
        add(f"用户答应了{m.group(1)}{_clean(m.group(2))}。", None, _clean(m.group(2)))
    for m in re.finditer(rf"我(?:在|正在)?(?:读|学|念|学的是|读的是)([{CJK}]{{1,8}}?)(?:专业|系)", c):
        add(f"用户学的是{m.group(1)}。", "user.study", m.group(1))
    for m in re.finditer(rf"我(?:最近|正在|在)(?:学|学习)([{CJK}A-Za-z]{{1,8}})", c):
        if not re.search("专业|系", c):
            add(f"用户在学{_clean(m.group(1))}。", f"learn.{_clean(m.group(1))}", _clean(m.group(1)))
    for m in re.finditer(r"我(?:今年)?([0-9]{1,3}|[一二三四五六七八九十两]{1,4})岁", c):
        add(f"用户今年{m.group(1)}岁。", "user.age", m.group(1))
    for m in re.finditer(rf"我的生日是([{CJK}0-9月日号]{{1,8}})", c):
        add(f"用户的生日是{_clean(m.group(1))}。", "user.birthday", _clean(m.group(1)))
    for m in re.finditer(rf"我对([{CJK}A-Za-z]{{1,8}})过敏", c):
        add(f"用户对{m.group(1)}过敏。", f"health.allergy.{m.group(1)}", m.group(1))
    for m in re.finditer(rf"我(?:很|特别|非常|最)?(?:怕|害怕)([{CJK}A-Za-z]{{1,8}})", c):
        add(f"用户害怕{_clean(m.group(1))}。", f"fear.{_clean(m.group(1))}", _clean(m.group(1)))
    if re.search(r"我(?:吃素|是素食者|只吃素)", c):
        add("用户吃素。", "user.diet", "素")
    m = re.search(r"我(?:已经)?(结婚|订婚|离婚|单身)了?", c)
    if m:
        add(f"用户{m.group(1)}了。" if m.group(1) != "单身" else "用户单身。", "user.relationship", m.group(1))
    for m in re.finditer(rf"我会说([{CJK}A-Za-z]{{1,10}})", c):
        add(f"用户会说{_clean(m.group(1))}。", "user.languages", _clean(m.group(1)))

    for m in re.finditer(rf"我最喜欢的([{CJK}]{{1,4}}?)是([{CJK}A-Za-z0-9]{{1,12}})", c):
        add(f"用户最喜欢的{m.group(1)}是{_clean(m.group(2))}。", f"fav.{m.group(1)}", _clean(m.group(2)))
    for m in re.finditer(rf"我的(?:爱好|兴趣)是([{CJK}A-Za-z]{{1,12}})", c):
        add(f"用户的爱好是{_clean(m.group(1))}。", f"pref.{_clean(m.group(1))}", _clean(m.group(1)))
    neg = re.search(rf"我(?:已经|现在)?(?:不再|再也不|已经不|戒了|不)([{CJK}A-Za-z]{{1,10}}?)了", c) \
        or re.search(rf"我(?:已经)?(?:不再|再也不)([{CJK}A-Za-z]{{1,10}})", c) \
        or re.search(rf"我(?:已经)?戒(?:掉)?了?([{CJK}]{{1,6}})", c)
    pet_gone = re.search(rf"我(?:已经)?(?:不再养|不养|没有再养)({animals})了?", c)
    if pet_gone:
        animal = pet_gone.group(1)
        out.append(Fact(f"用户已经不养{animal}了。", f"pet.{ANIMALS[animal]}.name", "", negated=True))
    elif neg and not neg_city and not re.search("住在|是", neg.group(1)):
        what = _clean(neg.group(1))
        if what.startswith(("喜欢", "爱")):
            what = re.sub(r"^(喜欢|爱)", "", what)
        what = re.sub(r"^(喝|吃|抽|玩|弹|养)", lambda g: g.group(1), what)
        if what and "戒" in neg.group(0):
            add(f"用户戒了{what}。", f"pref.{_obj_key(what)}", what, negated=True)
        elif what:
            add(f"用户不再{what}了。", f"pref.{_obj_key(what)}", what, negated=True)
    else:
        for m in re.finditer(rf"我(?:周末|平时|晚上|空闲时|有空时)?(?:很|最|非常|特别|真的|也|平时|一直|超|还)?(?:很|最|非常|特别)?(不喜欢|讨厌|喜欢|爱|热爱|迷上了|着迷于)"
                             rf"([{CJK}A-Za-z0-9]{{1,14}})", c):
            verb, value = m.group(1), _clean(m.group(2))
            if m.group(0).startswith("我最喜欢的") or not value or value[0] in _PRON or value.startswith(("的", "上", "过")):
                continue
            most = "最" if "最" in m.group(0)[:3] else ""
            positive = verb not in ("不喜欢", "讨厌")
            text = f"用户{most}{verb}{value}。" if positive or verb == "讨厌" else f"用户不喜欢{value}。"
            add(text, f"pref.{_obj_key(value)}", value)
        for m in re.finditer(rf"我(?:每天|每周|周末|经常|平时|一直|常常)(?:都)?(?:会)?([{CJK}A-Za-z]{{2,12}})", c):
            value = _clean(m.group(1))
            if not re.match(r"^(喜欢|爱|讨厌|不|在|是|要|想|觉得)", value):
                add(f"用户{m.group(0)[1:]}。".replace("。。", "。"), f"pref.{_obj_key(value)}", value)
    return dedupe(out)


_VERB_PREFIX = re.compile(r"^(?:每天|每周|周末|早上|晚上|平时|经常|都|会|去)*(?:喝|吃|抽|玩|弹|打|看|听|养|学|做|画|写|跑|种|收集|练|拉)")


def _obj_key(value: str) -> str:
    """Slot key of a Chinese preference: the object without its leading verb (喝咖啡 → 咖啡)."""
    return _VERB_PREFIX.sub("", value) or value
