"""Labelled prototype sentences for the StageDirector's intent classifier (en + zh).

A message is labelled with the intent of its nearest prototypes in the multilingual
embedding space, so these sentences are the classifier's whole "training set". Trade-offs:
a Python module (not YAML) so it ships with the package without extra package-data
rules and loads without parsing; short, typical sentences in both languages, because
the embedder maps Chinese and English near each other but not onto each other. The
evaluation set (tests/data/intents.yaml) must never repeat these sentences.
"""
from __future__ import annotations

#: The shared intent vocabulary (card ``reactions`` keys), in a fixed order.
INTENTS: tuple[str, ...] = ("greeting", "farewell", "praise", "thanks", "insult", "threat",
                            "sad", "happy", "joke", "question", "request", "neutral")

PROTOTYPES: dict[str, list[str]] = {
    "greeting": [
        "Hello!", "Hi there, how are you?", "Good morning!", "Hey, nice to meet you.",
        "Good evening, my friend.", "Greetings!",
        "你好！", "早上好！", "嗨，好久不见。", "晚上好，最近怎么样？", "见到你很高兴。", "大家好！",
    ],
    "farewell": [
        "Goodbye!", "See you later.", "I have to go now, bye.", "Good night, sleep well.",
        "Farewell, until we meet again.", "Take care, talk to you tomorrow.",
        "再见！", "回头见。", "我得走了，拜拜。", "晚安，做个好梦。", "后会有期。", "明天再聊吧，保重。",
    ],
    "praise": [
        "You are brilliant!", "That was amazing, well done.", "You're so clever.",
        "I really admire your skill.", "You are the best detective in the world.",
        "What a genius you are.",
        "你真厉害！", "太棒了，干得好。", "你真聪明。", "我很佩服你的本事。", "你是天下第一的英雄。", "真是天才啊。",
    ],
    "thanks": [
        "Thank you!", "Thanks a lot for your help.", "I really appreciate it.",
        "Thank you so much, I owe you one.", "Many thanks for saving me.", "Cheers, that helped.",
        "谢谢你！", "非常感谢你的帮助。", "多谢了。", "太感谢了，我欠你一个人情。", "谢谢你救了我。", "辛苦你了，谢谢。",
    ],
    "insult": [
        "You are an idiot.", "You're useless.", "Shut up, you fool.", "You are stupid and ugly.",
        "What a pathetic loser you are.", "Nobody likes you, you arrogant jerk.",
        "你这个笨蛋。", "你真没用。", "闭嘴，蠢货。", "你又蠢又丑。", "你这个废物。", "没人喜欢你，自大的家伙。",
    ],
    "threat": [
        "I will kill you.", "Give me the money or you'll regret it.", "I'm going to destroy you.",
        "Watch your back, I know where you live.", "Do that again and I will hurt you.",
        "I'll burn your house down.",
        "我要杀了你。", "把钱交出来，否则你会后悔的。", "我要毁了你。", "小心点，我知道你住在哪里。",
        "再这样我就揍你。", "我要烧了你的房子。",
    ],
    "sad": [
        "I feel so sad today.", "My dog died yesterday.", "I'm lonely and nobody cares about me.",
        "I failed my exam and I want to cry.", "Everything is going wrong in my life.",
        "I miss my mother so much.",
        "我今天好难过。", "我的狗昨天死了。", "我好孤独，没有人在乎我。", "我考试没及格，想哭。",
        "我的生活一团糟。", "我好想我的妈妈。",
    ],
    "happy": [
        "I'm so happy today!", "I got the job!", "We won the game, this is wonderful!",
        "I'm getting married next month!", "What a beautiful day, I feel great.",
        "I passed the exam, hooray!",
        "我今天太开心了！", "我找到工作了！", "我们赢了，太好了！", "我下个月要结婚了！",
        "今天天气真好，心情好极了。", "我考试通过了，耶！",
    ],
    "joke": [
        "Want to hear a joke? Why did the chicken cross the road?", "Haha, just kidding!",
        "Knock knock, who's there?", "That's hilarious, lol.", "I'm only teasing you.",
        "Tell me something funny.",
        "给你讲个笑话吧。", "哈哈，开玩笑的啦！", "我逗你玩呢。", "笑死我了。", "说个段子来听听。", "别当真，我是闹着玩的。",
    ],
    "question": [
        "What is your name?", "Where are you from?", "How did you know that?",
        "Why did you do it?", "Who was the murderer?", "When did this happen?",
        "你叫什么名字？", "你从哪里来？", "你是怎么知道的？", "你为什么这么做？", "凶手是谁？", "这是什么时候发生的？",
    ],
    "request": [
        "Please help me find my cat.", "Could you teach me how to fight?", "Show me the map.",
        "Can you lend me some money?", "Take me with you.", "Please explain the plan to me.",
        "请帮我找到我的猫。", "你能教我武功吗？", "把地图给我看看。", "借我点钱好吗？", "带我一起去吧。", "请给我讲讲这个计划。",
    ],
    "neutral": [
        "I went to the market this morning.", "The weather is cloudy.", "I see.", "Okay.",
        "The train leaves at nine.", "I read a book about history.",
        "我今天去了市场。", "天阴了。", "原来如此。", "好的。", "火车九点出发。", "我在读一本历史书。",
    ],
}
