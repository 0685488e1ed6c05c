//! The chat template: the Jinja template the model carries (`tokenizer.chat_template` in its
//! GGUF), rendered as Hugging Face's `transformers` renders it (blocks trimmed, Python's string
//! methods, `raise_exception`), and the control-token texts a message may not contain.

use aho_corasick::AhoCorasick;
use minijinja::{Environment, ErrorKind};
use zeroize::Zeroizing;

use crate::engine::Message;

/// A compiled chat template.
pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Compile `source`; `bos` and `eos` are the texts of the model's BOS and EOS tokens, which
    /// templates write as `bos_token` and `eos_token`.
    pub(crate) fn new(source: String, bos: String, eos: String) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned("chat", source)
            .map_err(|e| format!("the chat template does not compile: {e}"))?;
        Ok(ChatTemplate { env, bos, eos })
    }

    /// The conversation as the model expects it, ending where the assistant's answer begins.
    /// A conversation the template refuses (roles out of order, say) is an error with the
    /// template's message.
    pub(crate) fn render(&self, messages: &[Message]) -> Result<Zeroizing<String>, String> {
        let messages: Vec<minijinja::Value> = messages
            .iter()
            .map(|m| {
                minijinja::context! {
                    role => m.role.as_str(),
                    content => m.content.as_str(),
                }
            })
            .collect();
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| format!("the chat template: {e}"))?;
        let text = template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => self.bos.as_str(),
                eos_token => self.eos.as_str(),
            })
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidOperation => e.detail().unwrap_or("refused").to_owned(),
                _ => format!("the chat template failed: {e}"),
            })?;
        Ok(Zeroizing::new(text))
    }
}

/// The texts of the model's control tokens (turn markers and the like): a message that
/// contains one could forge turns of the conversation, since the rendered prompt is tokenized
/// with special tokens recognised.
pub(crate) struct ControlTexts {
    matcher: AhoCorasick,
}

impl ControlTexts {
    pub(crate) fn new(texts: Vec<String>) -> Result<Self, String> {
        let texts: Vec<String> = texts.into_iter().filter(|t| !t.is_empty()).collect();
        let matcher = AhoCorasick::new(&texts).map_err(|e| e.to_string())?;
        Ok(ControlTexts { matcher })
    }

    /// Whether `text` contains any of them.
    pub(crate) fn found_in(&self, text: &str) -> bool {
        self.matcher.is_match(text)
    }
}
