//! The plugin protocol's stdin and stdout. lightningd gives a plugin pipes; read and written
//! through tokio's epoll-driven pipe types, each message costs no thread handoff. tokio's
//! `Stdin`/`Stdout` run every read and write on the blocking pool instead: two handoffs per
//! hook call, which made up a good part of every hook's round trip (BENCHMARKS.md).
//! Anything that is not a pipe (a socket, a terminal) keeps tokio's `Stdin`/`Stdout`.

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;

/// Standard input as the plugin reads it.
pub enum Input {
    Pipe(pipe::Receiver),
    Std(tokio::io::Stdin),
}

/// Standard output as the plugin writes it.
pub enum Output {
    Pipe(pipe::Sender),
    Std(tokio::io::Stdout),
}

/// Stdin and stdout, as pipes where they are. Must run inside the runtime.
pub fn open() -> (Input, Output) {
    // A duplicate of each descriptor: the pipe types own theirs and close it on drop.
    let input = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(pipe::Receiver::from_owned_fd)
        .map_or_else(|_| Input::Std(tokio::io::stdin()), Input::Pipe);
    let output = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(pipe::Sender::from_owned_fd)
        .map_or_else(|_| Output::Std(tokio::io::stdout()), Output::Pipe);
    (input, output)
}

impl AsyncRead for Input {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Input::Pipe(p) => Pin::new(p).poll_read(cx, buf),
            Input::Std(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Output {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Output::Pipe(p) => Pin::new(p).poll_write(cx, buf),
            Output::Std(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Output::Pipe(p) => Pin::new(p).poll_flush(cx),
            Output::Std(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Output::Pipe(p) => Pin::new(p).poll_shutdown(cx),
            Output::Std(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn pipes_carry_messages_both_ways() {
        let (tx, rx) = pipe::pipe().unwrap();
        let (mut input, mut output) = (Input::Pipe(rx), Output::Pipe(tx));
        output.write_all(b"{\"id\":1}\n\n").await.unwrap();
        output.flush().await.unwrap();
        let mut buf = [0u8; 10];
        input.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"{\"id\":1}\n\n");
        // EOF when the writer is gone, as when lightningd closes the plugin's stdin.
        drop(output);
        assert_eq!(input.read(&mut buf).await.unwrap(), 0);
    }
}
